"""Orbax checkpoints: periodic saves, automatic resume, and parameter transfer (`init_from`)."""

import functools
import json
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
    # Synchronous saves: orbax-checkpoint 0.12.8's background commit of one save raced with the
    # next (a CI run failed with "Checkpoint directory does not exist: .../1.orbax-checkpoint-
    # tmp/state.orbax-checkpoint-tmp" when steps 1 and 2 were saved back to back). A save
    # now blocks the loop for the seconds it takes to write the state (every
    # config.checkpoint_every_steps steps).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=every_steps,
        create=True,
        enable_async_checkpointing=False,
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


CONFIG_FILE = "config.json"


def load_config(workdir: str):
    """The config a run was trained with, read back from its workdir's `config.json`.

    Raises:
      FileNotFoundError: when the workdir has no config.json (not a training workdir).
    """
    import ml_collections  # Local: only the analysis tools need it here.

    path = os.path.join(os.path.abspath(workdir), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{workdir!r} has no {CONFIG_FILE}: it is not the workdir of a training run "
            "(ltpa-train writes config.json there when it starts). Pass the --workdir you "
            "trained in."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str, step: int | None = None):
    """The model, variables and config of a training run, for analysis.

    Args:
      workdir: the run's workdir (it holds config.json and checkpoints/).
      step: the checkpoint step to read; the latest when None.

    Returns:
      (config, model, variables {"params", "batch_stats"}, step).

    Raises:
      FileNotFoundError: no config.json, no checkpoint, or no checkpoint at `step` (the
        message lists the steps there are).
      ValueError: a checkpoint that cannot be read (corrupt or from another model).
    """
    from ltpa_jax.models import create_model  # Local: models import nothing from here.

    config = load_config(workdir)
    directory = checkpoint_dir(workdir)
    steps = sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []
    if not steps:
        raise FileNotFoundError(
            f"{directory} holds no checkpoint. Train first (ltpa-train --workdir={workdir} "
            "...), or point --workdir at a run that has saved one."
        )
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"No checkpoint at step {step} in {directory}; there are {steps}.")
    try:
        loaded = load_variables(os.path.join(directory, str(step)))
    except Exception as error:  # noqa: BLE001 - Orbax raises many types for a damaged save.
        raise ValueError(
            f"The checkpoint at step {step} in {directory} cannot be read "
            f"({type(error).__name__}: {error}). It may be corrupt or cut off; pick another "
            f"step with --step (there are {steps}) or delete it."
        ) from error
    model = create_model(config)
    variables = {"params": loaded["params"], "batch_stats": loaded["batch_stats"]}
    _check_variables(model, config, variables, directory, step)
    return config, model, variables, step


def _check_variables(model, config, variables: dict, directory: str, step: int) -> None:
    """Raises ValueError when the checkpoint's parameters do not fit the config's model."""
    shape = (1, config.image_size, config.image_size, 3)
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(shape)))
    flatten = functools.partial(flax.traverse_util.flatten_dict, sep="/")
    want = {k: tuple(v.shape) for k, v in flatten(expected["params"]).items()}
    have = {k: tuple(np.shape(v)) for k, v in flatten(variables["params"]).items()}
    if want != have:
        missing = sorted(set(want) - set(have))[:3]
        extra = sorted(set(have) - set(want))[:3]
        raise ValueError(
            f"The checkpoint at step {step} in {directory} does not match the model of the "
            f"workdir's config.json (missing {missing}, unexpected {extra}, or other shapes). "
            "Was config.json edited, or the checkpoints copied from another run?"
        )
