"""Orbax checkpoints: periodic saves, automatic resume, and parameter transfer (`init_from`)."""

import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    """Where a run keeps its checkpoints."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def create_manager(workdir: str, keep: int, every_steps: int) -> ocp.CheckpointManager:
    """A manager saving every `every_steps` steps and keeping the last `keep` checkpoints."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=every_steps, create=True
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> bool:
    """Saves `state` (a pytree) at `step`; with force, regardless of the save interval."""
    return manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"step": int(step)})
        ),
        force=force,
    )


def restore_latest(manager: ocp.CheckpointManager, target):
    """Restores the latest checkpoint into the structure, shapes and shardings of `target`.

    Returns:
      (state, step), or (target, 0) when the directory holds no checkpoint.
    """
    step = manager.latest_step()
    if step is None:
        return target, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], int(restored["meta"]["step"])


def _find_checkpoint(path: str) -> tuple[str, int]:
    """Resolves a run's workdir, its checkpoints dir, or one step dir to (manager dir, step)."""
    path = os.path.abspath(path)
    for directory in (os.path.join(path, CHECKPOINT_DIR), path):
        if os.path.isdir(directory):
            steps = ocp.utils.checkpoint_steps(directory)
            if steps:
                return directory, max(steps)
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.isdir(path):
        return parent, int(name)
    raise FileNotFoundError(
        f"config.init_from={path!r} holds no Orbax checkpoint. Give the workdir of a finished "
        f"run (it has a {CHECKPOINT_DIR}/ folder), its {CHECKPOINT_DIR}/ folder, or one "
        "step folder inside it."
    )


def load_variables(path: str) -> dict:
    """Reads the parameters and batch statistics of another run's checkpoint, as numpy trees.

    Args:
      path: that run's workdir, checkpoints dir, or a step dir (see `_find_checkpoint`).

    Returns:
      {"params": ..., "batch_stats": ...} (batch_stats may be empty), and "step".
    """
    directory, step = _find_checkpoint(path)
    with ocp.CheckpointManager(directory) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
            "state"
        ]
    return {
        "params": restored["params"],
        "batch_stats": restored.get("batch_stats", {}) or {},
        "step": step,
    }


def merge_pretrained(new: dict, pretrained: dict) -> tuple[dict, list[str], list[str]]:
    """Takes every leaf of `pretrained` whose path and shape match `new`; keeps the rest.

    Args:
      new: freshly initialised tree (e.g. params).
      pretrained: loaded tree.

    Returns:
      (merged tree, paths loaded, paths newly initialised (absent or of another shape)).
    """
    flat_new = flax.traverse_util.flatten_dict(flax.core.unfreeze(new), sep="/")
    flat_old = flax.traverse_util.flatten_dict(flax.core.unfreeze(pretrained), sep="/")
    merged, loaded, fresh = {}, [], []
    for key, value in flat_new.items():
        old = flat_old.get(key)
        if old is not None and tuple(np.shape(old)) == tuple(value.shape):
            merged[key] = jax.numpy.asarray(old, dtype=value.dtype)
            loaded.append(key)
        else:
            merged[key] = value
            fresh.append(key if old is None else f"{key} (shape {np.shape(old)} -> {value.shape})")
    return flax.traverse_util.unflatten_dict(merged, sep="/"), loaded, fresh


def report_transfer(path: str, step: int, loaded: list[str], fresh: list[str]) -> str:
    """A readable summary of what `init_from` loaded and what it initialised anew."""
    lines = [f"init_from {path} (step {step}): loaded {len(loaded)} arrays"]
    if fresh:
        lines.append(f"newly initialised {len(fresh)}: " + ", ".join(fresh))
    message = "; ".join(lines)
    logging.info(message)
    return message
