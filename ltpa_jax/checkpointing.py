"""Orbax checkpoints: asynchronous saves, resume past damage, and parameter transfer (`init_from`).

This module knows checkpoints, not runs: every function takes the checkpoint directory (the
folder holding one numbered folder per saved step) as a `str` or `etils.epath.Path`. Where that
folder lies in a workdir is `ltpa_jax.rundir`'s business. Paths go through `etils.epath`, the
path layer Orbax uses, so `gs://bucket/run/checkpoints` works as well as a local folder; local
relative paths are made absolute (Orbax requires it), URLs are left as they are.

A checkpoint directory holds:

    <directory>/<step>/                     a finished checkpoint (it has commit_success.txt)
    <directory>/<step>.orbax-checkpoint-tmp a save still running, or one that was interrupted
    <directory>/damaged/<step>              a checkpoint set aside because it could not be read

Apart from rotation (`keep`, `keep_best`), nothing here deletes a checkpoint that was
finished: one that cannot be read, or a step folder without its commit marker, is moved to
`damaged/` and reported. Only temporary folders of interrupted saves are removed.
"""

import concurrent.futures
import contextlib
import functools
import logging as std_logging
import os
import re
import sys
import threading

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from ltpa_jax.paths import as_path

# Orbax (0.12.4 and later, so every checkpoint of this project) writes this file into a step
# folder as the last act of a save, in both of its atomicity modes: inside the temporary folder
# just before renaming it (local disks) or into the step folder itself (GCS, which has no
# atomic rename). A step folder without it is not a finished checkpoint: a save written in
# place and cut off, or a checkpoint whose deletion (rotation) was cut off. Orbax itself only
# checks the marker on GCS; locally it trusts the folder name, so we check it ourselves.
COMMIT_MARKER = "commit_success.txt"
# Suffix of the folder a save writes into before it is renamed to `<step>`.
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# Where unreadable or unfinished checkpoints are moved (a name Orbax never takes for a step).
DAMAGED_DIR = "damaged"
# The metric `keep_best` ranks checkpoints by.
BEST_METRIC = "accuracy"

_STEP_NAME = re.compile(r"^\d+$")
_TMP_NAME = re.compile(r"^(\d+)" + re.escape(TMP_SUFFIX) + r".*$")


class DamagedCheckpointError(ValueError):
    """A checkpoint that cannot be read (truncated or missing files, broken metadata)."""


class IncompatibleCheckpointError(ValueError):
    """An intact checkpoint that does not fit the state it was asked to restore into."""


def _is_committed(step_dir: epath.Path) -> bool:
    return (step_dir / COMMIT_MARKER).exists()


def list_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the finished checkpoints in `directory`, in increasing order.

    A step folder counts only with its commit marker: temporary folders of saves in progress
    (or interrupted), half-deleted folders and the `damaged/` folder are not checkpoints.
    """
    directory = as_path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in directory.iterdir()
        if _STEP_NAME.match(child.name) and child.is_dir() and _is_committed(child)
    )


# -- saving -------------------------------------------------------------------------------------


def _best_metric(metrics) -> float:
    value = (metrics or {}).get(BEST_METRIC)
    return float("-inf") if value is None or not np.isfinite(value) else float(value)


class _NoMetricsFilter(std_logging.Filter):
    """Drops Orbax's warning for a save without metrics: by design here, a checkpoint between
    two evaluations has none (it then only counts among the latest, not the best)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "Requested `tracked_metric`; did not provide metrics" not in record.getMessage()


std_logging.getLogger("absl").addFilter(_NoMetricsFilter())


def create_manager(
    directory: str | os.PathLike,
    keep: int,
    every_steps: int,
    *,
    keep_best: int = 0,
    async_saves: bool = True,
) -> ocp.CheckpointManager:
    """A manager saving every `every_steps` steps, keeping the latest `keep` checkpoints.

    Args:
      directory: the checkpoint directory (created if missing); local or a URL.
      keep: how many of the newest checkpoints to keep (at least 1).
      every_steps: save interval; `save(..., force=True)` saves off the interval.
      keep_best: also keep this many checkpoints with the highest eval accuracy
        (`metrics["accuracy"]` passed to `save`), however old. 0 keeps only the latest.
      async_saves: write checkpoints in a background thread (training goes on while a save
        is written; call `manager.wait_until_finished()` before reading one back and before
        exiting). False: `save` blocks until the checkpoint is committed.
    """
    if keep < 1:
        raise ValueError(f"keep={keep}: a run must keep at least its latest checkpoint (1).")
    if keep_best < 0:
        raise ValueError(f"keep_best={keep_best} must be 0 (off) or more.")
    # Saves in the background, our way: Orbax's own asynchronous saves (0.12.8) raced in
    # this project's loop: a background commit failed with "Checkpoint directory does not
    # exist: .../<step>.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp" (its metadata read
    # after the array writes), in 2 of 4 runs of an 8-device test on a loaded machine, once in
    # CI, and again on 2026-11-27 in tests/test_device_data.py under load; never isolated. So
    # the Orbax manager stays synchronous, and `BackgroundSaveManager` runs its whole save on
    # one worker thread from a host copy of the state (the devices' buffers are donated to the
    # next step, so the worker must not read them). Multi-process runs save blocking (a host
    # copy of a state spread over processes is not one process's to take). The same error came
    # once more later that day inside this worker's synchronous save (a full test run, 2
    # workers on 2 cores): Orbax's save under load, not its asynchrony; still not isolated.
    if keep_best:
        # One set of step folders, one policy: a step is kept while it is among the latest
        # `keep` or among the `keep_best` best by accuracy. No second copy of the state (as a
        # second manager in a sibling folder would write), and `restore_latest` needs no
        # special case: the best steps are simply older steps. `best_fn` is set as well so
        # that Orbax writes each step's metrics into its folder (it writes them only when
        # `best_fn` is set) and ranks the steps again after a restart.
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=keep),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=_best_metric,
                    reverse=False,  # Ascending: the last n, the highest accuracies, are kept.
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        retention = dict(preservation_policy=policy, best_fn=_best_metric, best_mode="max")
    else:
        retention = dict(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
        )
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every_steps,
        create=True,
        enable_async_checkpointing=False,
        **retention,
    )
    if async_saves and jax.process_count() == 1:
        return BackgroundSaveManager(as_path(directory), options=options)
    return ocp.CheckpointManager(as_path(directory), options=options)


_WORKER_PREFIX = "ltpa_checkpoint_save"


class BackgroundSaveManager(ocp.CheckpointManager):
    """A synchronous Orbax manager whose saves run on one worker thread, one at a time.

    `save` waits for the previous save (and raises its error, if it failed), copies the state
    to host memory (the only time the caller waits), and hands the copy to the worker.
    `wait_until_finished` (called by `close`, `restore_latest` and at the end of training)
    waits for the save in flight and raises its error.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=_WORKER_PREFIX)
        self._in_flight: concurrent.futures.Future | None = None

    def save(self, step: int, *args, args_on_host=None, force: bool = False, **kwargs) -> bool:
        """Starts saving `args_on_host` (Orbax `Composite` args of host arrays) at `step`."""
        self.wait_until_finished()
        if not (force or self.should_save(step)):
            return False
        self._in_flight = self._worker.submit(
            super().save, step, *args, args=args_on_host, force=force, **kwargs
        )
        return True

    def wait_until_finished(self) -> None:
        # Orbax's own `save` calls this too, on the worker: there it must not wait for itself.
        if not threading.current_thread().name.startswith(_WORKER_PREFIX):
            in_flight, self._in_flight = self._in_flight, None
            if in_flight is not None:
                in_flight.result()  # Raises the worker's error here, in the training thread.
        super().wait_until_finished()

    def close(self) -> None:
        try:
            super().close()  # Waits for the save in flight first.
        finally:
            self._worker.shutdown(wait=True)


@contextlib.contextmanager
def finished_on_error(manager: ocp.CheckpointManager):
    """Closes `manager`, waiting for its save in flight, when the block raises anything.

    The block's exception propagates; a failure of the save in flight is printed beside it.
    """
    try:
        yield manager
    except BaseException:
        try:
            manager.close()
        except Exception as error:  # noqa: BLE001 (the block's own error matters more)
            print(
                f"warning: the checkpoint being saved failed: {_first_line(error)}", file=sys.stderr
            )
        raise


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state,
    *,
    force: bool = False,
    metrics: dict | None = None,
) -> bool:
    """Saves `state` (a pytree) at `step`, in the background; with force, off the interval.

    Args:
      manager: from `create_manager`.
      step: the training step.
      state: the train state.
      force: save even when `step` is not on the save interval (end of training, SIGTERM).
      metrics: eval metrics of this step (e.g. {"accuracy": ...}); with `keep_best` they rank
        the checkpoint. Pass them only for a step that was just evaluated.

    Returns:
      Whether a save was started (False off the interval, or when `step` is already saved).

    Check `is_finite(state)` first: a saved checkpoint counts as the newest one and rotation
    deletes older ones as soon as it is committed.
    """
    if isinstance(manager, BackgroundSaveManager):
        manager.wait_until_finished()  # The step in flight must be listed before it is checked.
    if step in manager.all_steps():
        return False  # Already saved (e.g. a SIGTERM right after a periodic save).
    metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
    if isinstance(manager, BackgroundSaveManager):
        # A copy the worker owns: on the CPU `device_get` may hand back views of the device
        # buffers, which the next (donating) train step reuses.
        on_host = _save_args(step, jax.tree.map(np.array, jax.device_get(state)))
        return manager.save(step, args_on_host=on_host, force=force, metrics=metrics)
    return manager.save(step, args=_save_args(step, state), force=force, metrics=metrics)


def _save_args(step: int, state) -> ocp.args.Composite:
    """What a checkpoint holds: the state, and the step as JSON."""
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"step": int(step)})
    )


@jax.jit
def _all_finite(tree) -> jax.Array:
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def is_finite(tree) -> bool:
    """Whether every float leaf of `tree` (params, optimizer state, ...) is finite.

    One jitted reduction on the devices (sharded leaves stay where they are); integer, boolean
    and key leaves are skipped. Call it before `save`, so that a diverged state is never saved
    and never rotates the last good checkpoints away.
    """
    return bool(_all_finite(tree))


# -- moving aside and cleaning ------------------------------------------------------------------


def _first_line(error: BaseException, limit: int = 300) -> str:
    """`Type: first sentence` of an error (Orbax appends hints about its own API options)."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(":. ") if lines else ""
    return f"{type(error).__name__}: {text[:limit]}"


def _set_aside(directory: epath.Path, step_dir: epath.Path) -> epath.Path:
    """Moves a step folder to `<directory>/damaged/<name>` (a free name) and returns it."""
    damaged = directory / DAMAGED_DIR
    damaged.mkdir(parents=True, exist_ok=True)
    target, n = damaged / step_dir.name, 1
    while target.exists():
        target, n = damaged / f"{step_dir.name}-{n}", n + 1
    step_dir.rename(target)
    return target


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes(name)


def clean_partial_checkpoints(directory: str | os.PathLike) -> list[str]:
    """Clears what interrupted saves and deletions left in a checkpoint directory.

    Call it at start-up, before `create_manager` (nothing of this process is being saved
    then). Two kinds of leftovers:

    * `<step>.orbax-checkpoint-tmp*`: a save killed before its commit (e.g. SIGKILL after a
      SIGTERM). Removed: it never became a checkpoint (the rename to `<step>` is the commit),
      its contents are partial by construction, and Orbax itself deletes such a folder when it
      saves that step again. The last finished checkpoint is not touched.
    * `<step>/` without commit_success.txt: a deletion by rotation cut off part-way (local
      disks), or a save written in place and cut off (GCS). Moved to `damaged/`, not deleted:
      it is not a usable checkpoint, but it may be all that is left of one.

    On several processes, the first one cleans and all wait for it.

    Returns:
      One note per folder handled, naming the step, the path and what was done.
    """
    directory = as_path(directory)
    notes = []
    if jax.process_index() == 0 and directory.is_dir():
        for child in sorted(directory.iterdir(), key=lambda p: p.name):
            if (match := _TMP_NAME.match(child.name)) and child.is_dir():
                child.rmtree()
                notes.append(
                    f"removed {child}: the save of step {match.group(1)} was interrupted "
                    "before it finished (it was never a checkpoint)"
                )
            elif _STEP_NAME.match(child.name) and child.is_dir() and not _is_committed(child):
                moved = _set_aside(directory, child)
                notes.append(
                    f"step {child.name} at {child} has no {COMMIT_MARKER} (a save or a "
                    f"deletion was cut off): moved it to {moved}; it is not used as a "
                    "checkpoint"
                )
    for note in notes:
        logging.warning(note)
    _sync("ltpa_clean_partial_checkpoints")
    return notes


# -- reading ------------------------------------------------------------------------------------


def _is_orbax_read_debris(error: BaseException | None) -> bool:
    """Whether `error` is what a failed Orbax read leaves behind, after it was reported.

    When a tensorstore read fails, Orbax's `asyncio.run` ends with the error (which we catch
    and report) while tensorstore's other reads are still in flight; when they finish, their
    callbacks find the event loop closed ("RuntimeError: Event loop is closed", printed as a
    traceback by Python's unraisable hook), and their futures die with the same tensorstore
    error unread ("Future exception was never retrieved", logged by asyncio), and Orbax's
    read coroutines still pending are closed ("Exception ignored in: <coroutine ...>
    GeneratorExit"). All only repeat an error already in our note.
    """
    if isinstance(error, RuntimeError):
        return str(error) == "Event loop is closed"
    return isinstance(error, ValueError) and "tensorstore_spec" in str(error)


class _DebrisFilter(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not error and record.args and isinstance(record.args, dict):
            error = record.args.get("exception")
        context = getattr(record, "msg", "")
        return not (
            isinstance(context, str)
            and "exception was never retrieved" in context
            and _is_orbax_read_debris(error)
        )


@functools.cache
def _silence_orbax_read_debris() -> None:
    """Keeps the echoes of a failed read (see `_is_orbax_read_debris`) off the console.

    Installed once, before the first read: the echoes arrive from tensorstore's threads after
    the read has failed. Every other unraisable error and asyncio message passes unchanged.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)  # An Orbax coroutine left pending.
        pending = code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename
        if not (pending or _is_orbax_read_debris(unraisable.exc_value)):
            previous(unraisable)

    sys.unraisablehook = hook
    std_logging.getLogger("asyncio").addFilter(_DebrisFilter())


def _read_step_numpy(step_dir: epath.Path) -> tuple[dict, dict]:
    """(state as a tree of numpy arrays, meta) of a step folder, on any device count.

    Reads with the checkpoint's own metadata as the target and numpy as the restore type, so
    that a checkpoint sharded over 8 devices reads on a machine with 1 (Orbax refuses a restore
    without a target there: "Topology mismatch detected").
    """
    handler = ocp.PyTreeCheckpointHandler()
    try:
        metadata = handler.metadata(step_dir / "state")
        tree = getattr(metadata, "tree", metadata)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = handler.restore(
            step_dir / "state", args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    finally:
        handler.close()
    meta = ocp.JsonCheckpointHandler().restore(step_dir / "meta")
    return state, meta


def _damaged_note(step: int, step_dir: epath.Path, error: BaseException) -> str:
    return f"the checkpoint at step {step} ({step_dir}) cannot be read ({_first_line(error)})"


def restore_latest(manager_or_dir: ocp.CheckpointManager | str | os.PathLike, target):
    """Restores the newest intact checkpoint into the structure, shapes and shardings of `target`.

    A checkpoint that cannot be read (truncated or missing files, OCDBT or metadata errors) is
    moved to `<directory>/damaged/` (never deleted), reported in a note, and the next newest
    is tried. A checkpoint that reads fine on its own but does not fit `target` (another
    model) is not damaged: it stays in place and IncompatibleCheckpointError is raised.

    Args:
      manager_or_dir: a manager from `create_manager`, or a checkpoint directory.
      target: the freshly initialised state (its shardings decide where the restored arrays
        go, so a checkpoint from 8 devices restores onto 1 and the other way round).

    Returns:
      (state, step, notes): the restored state and its step, or (target, 0, notes) when no
      intact checkpoint is left; notes name each damaged step, its path, the error and where
      it was moved.

    Raises:
      IncompatibleCheckpointError: the newest intact checkpoint holds another tree or shapes.
    """
    if isinstance(manager_or_dir, ocp.CheckpointManager):
        manager, owned = manager_or_dir, False
    else:
        directory = as_path(manager_or_dir)
        if not directory.is_dir():
            return target, 0, []
        manager, owned = ocp.CheckpointManager(directory), True
    _silence_orbax_read_debris()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    notes: list[str] = []
    try:
        manager.wait_until_finished()
        while (step := manager.latest_step()) is not None:
            step_dir = manager.directory / str(step)
            try:
                restored = manager.restore(step, args=args)
                return restored["state"], int(restored["meta"]["step"]), notes
            except Exception as error:  # noqa: BLE001 - Orbax/tensorstore raise many types.
                try:
                    _read_step_numpy(step_dir)
                except Exception:  # noqa: BLE001 - unreadable even without a target: damaged.
                    pass
                else:
                    raise IncompatibleCheckpointError(
                        f"The checkpoint at step {step} ({step_dir}) is intact but does not "
                        f"fit the state being restored ({_first_line(error)}): it holds "
                        "another model. It is left as it is. Continue that run with the "
                        "config it was trained with, or start the new one in another "
                        "workdir."
                    ) from error
                if jax.process_index() == 0:
                    moved = _set_aside(manager.directory, step_dir)
                    note = (
                        f"{_damaged_note(step, step_dir, error)}: moved it to {moved} (kept, "
                        "not deleted) and fell back to the next newest checkpoint"
                    )
                else:
                    note = f"{_damaged_note(step, step_dir, error)}: set aside by process 0"
                logging.warning(note)
                notes.append(note)
                _sync(f"ltpa_restore_set_aside_{step}")
                manager.reload()
        return target, 0, notes
    finally:
        if owned:
            manager.close()


def _checkpoint_candidates(path: epath.Path) -> tuple[list[int], bool]:
    """(steps to try, newest first; whether `path` is a single step folder)."""
    markers = ("state", COMMIT_MARKER, "_CHECKPOINT_METADATA")
    if _STEP_NAME.match(path.name) and any((path / name).exists() for name in markers):
        if not _is_committed(path):
            raise DamagedCheckpointError(
                f"{path} is not a finished checkpoint (it has no {COMMIT_MARKER}: its save or "
                f"deletion was cut off). Give another step folder (there are "
                f"{list_steps(path.parent)}) or the checkpoint folder itself."
            )
        return [int(path.name)], True
    steps = list_steps(path)
    if not steps:
        raise FileNotFoundError(
            f"{path} holds no Orbax checkpoint. Give a checkpoint folder (it holds one "
            "numbered folder per saved step) or one step folder inside it."
        )
    return steps[::-1], False


def load_variables(path: str | os.PathLike) -> dict:
    """Reads the parameters and batch statistics of a checkpoint, as numpy trees.

    Reads on any number of devices, whatever the run that wrote it used. Never moves or
    changes anything (the checkpoint may belong to a run still training).

    Args:
      path: a checkpoint directory (the newest intact step is read; damaged newer ones are
        skipped with a note) or one step folder inside it (read or raise).

    Returns:
      {"params": ..., "batch_stats": ... (may be empty), "step": int, "notes": [str]}, notes
      naming each damaged step that was skipped.

    Raises:
      FileNotFoundError: `path` holds no checkpoint.
      DamagedCheckpointError: the step folder given, or every checkpoint there, cannot be read.
    """
    _silence_orbax_read_debris()
    path = as_path(path)
    steps, single = _checkpoint_candidates(path)
    directory = path.parent if single else path
    notes = []
    for step in steps:
        step_dir = path if single else path / str(step)
        try:
            state, _ = _read_step_numpy(step_dir)
        except Exception as error:  # noqa: BLE001 - Orbax/tensorstore raise many types.
            if single:
                others = [s for s in list_steps(directory) if s != step]
                raise DamagedCheckpointError(
                    f"The checkpoint at step {step} ({step_dir}) cannot be read "
                    f"({_first_line(error)}). It is damaged or cut off; give another step "
                    f"(there are {others}) or the checkpoint folder {directory} to use the "
                    "newest intact one."
                ) from error
            note = f"{_damaged_note(step, step_dir, error)}: skipped it"
            logging.warning(note)
            notes.append(note)
            continue
        return {
            "params": state["params"],
            "batch_stats": state.get("batch_stats", {}) or {},
            "step": step,
            "notes": notes,
        }
    raise DamagedCheckpointError(
        f"No checkpoint in {path} can be read: " + "; ".join(notes) + ". Train again, or "
        "give another run's checkpoints."
    )


# -- parameter transfer (init_from) -------------------------------------------------------------


def merge_pretrained(new: dict, pretrained: dict) -> tuple[dict, list[str], list[str]]:
    """Takes every leaf of `pretrained` whose path and shape match `new`; keeps the rest.

    Args:
      new: freshly initialised tree (e.g. params).
      pretrained: loaded tree.

    Returns:
      (merged tree, paths loaded, paths newly initialised (absent or of another shape)).
    """
    flatten = functools.partial(flax.traverse_util.flatten_dict, sep="/")
    flat_new = flatten(flax.core.unfreeze(new))
    flat_old = flatten(flax.core.unfreeze(pretrained))
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
