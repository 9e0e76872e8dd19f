"""The run directory (`--workdir`): its layout, and every read and write of it.

One training run owns one workdir:

    <workdir>/
      config.json              the config the run trains with (written before the first step)
      config_history.jsonl     one line per rerun that changed a compatible field
      checkpoints/<step>/      Orbax checkpoints (ltpa_jax.checkpointing)
      pictures/attention_step<step>.png   attention maps at each evaluation
      final_metrics.json       the last evaluation, written when training ends
      analysis/                ltpa-analyze's tables, CSVs and plots
      attention/<source>_step<step>/      ltpa-attend's grids and attention.npz
      events.out.tfevents.*    TensorBoard (clu's writer)

Every path goes through `ltpa_jax.paths` (`etils.epath`, the path layer Orbax uses), so a
workdir may be a local folder or a URL such as `gs://bucket/run`.
"""

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, NamedTuple

import flax
import jax
import ml_collections
import numpy as np
from etils import epath

from ltpa_jax.configs import default
from ltpa_jax.paths import as_path, require_checkpoint_support

CONFIG_FILE = "config.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"
CHECKPOINTS = "checkpoints"
PICTURES = "pictures"
FINAL_METRICS_FILE = "final_metrics.json"
ANALYSIS = "analysis"
ATTENTION = "attention"

# Fields that define what a checkpoint holds (parameter shapes, the data it learned from): a
# rerun of a workdir may not change them. The others (steps, intervals, learning rate,
# conv_impl, remat, ...) may change from one run of a workdir to the next.
CHECKPOINT_FIELDS = (
    "dataset",
    "image_size",
    "model.backbone",
    "model.depth",
    "model.num_classes",
    "model.width",
    "model.num_taps",
    "model.compatibility",
    "model.normalization",
    "model.tap_position",
    "model.projection",
    "model.head",
    "model.batch_norm",
    "model.preset",  # Other layers (and, for the plain ResNet, the same parameter tree).
    "reset_momentum_at_decay",  # Another optimizer state.
)


class RunDirError(ValueError):
    """A workdir that cannot be used as asked (not a run, another model's run, not writable)."""


def flat_config(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
    """`{"model.width": 0.125, ...}` of a (nested) config, tuples as lists (as in JSON)."""
    tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    flat = flax.traverse_util.flatten_dict(tree, sep=".")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The layout of one workdir. Build it with `RunDir.at(workdir)`."""

    path: epath.Path

    @classmethod
    def at(cls, workdir: str | os.PathLike) -> "RunDir":
        """The layout of `workdir` (a local path or a URL); checks a bucket can hold checkpoints."""
        require_checkpoint_support(workdir)
        return cls(as_path(workdir))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    __str__ = __fspath__

    @property
    def config_file(self) -> epath.Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint_dir(self) -> epath.Path:
        return self.path / CHECKPOINTS

    @property
    def final_metrics_file(self) -> epath.Path:
        return self.path / FINAL_METRICS_FILE

    @property
    def analysis_dir(self) -> epath.Path:
        return self.path / ANALYSIS

    def picture_file(self, step: int) -> epath.Path:
        """The attention picture drawn at the evaluation of `step`."""
        return self.path / PICTURES / f"attention_step{step:07d}.png"

    def pictures(self) -> list[epath.Path]:
        """The attention pictures written so far, oldest step first (local folder or URL)."""
        folder = self.path / PICTURES
        return sorted(folder.glob("attention_step*.png")) if folder.exists() else []

    def attention_dir(self, source: str, step: int) -> epath.Path:
        """Where ltpa-attend writes the maps of `source` (a split or a folder name)."""
        return self.path / ATTENTION / f"{source}_step{step}"

    # -- creating and checking ---------------------------------------------------------------

    def create(self) -> None:
        """Makes the folder (and its parents); RunDirError when it cannot be a folder."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(
                f"--workdir={self} is a file, not a folder. Give a folder path (it is created "
                "if missing)."
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirError(
                f"--workdir={self} cannot be created ({error.strerror or error}). Choose a "
                "folder you can write to."
            ) from error

    def has_config(self) -> bool:
        return self.config_file.exists()

    def read_config(self) -> ml_collections.ConfigDict:
        """The config the run was made with (config.json).

        Raises:
          RunDirError: no config.json (not the workdir of a training run) or an unreadable one.
        """
        if not self.config_file.exists():
            raise RunDirError(
                f"{self} has no {CONFIG_FILE}: it is not the workdir of a training run "
                "(ltpa-train writes config.json there when it starts). Pass the --workdir you "
                "trained in."
            )
        try:
            saved = json.loads(self.config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunDirError(
                f"{self.config_file} is damaged ({error}); restore it from a copy, or train in "
                "a new workdir."
            ) from error
        return with_defaults(saved)

    def check_compatible(self, config: ml_collections.ConfigDict) -> None:
        """Refuses a config that would train another model than the workdir's checkpoints hold.

        Compares the `CHECKPOINT_FIELDS` of `config` with the workdir's config.json; passes
        when the workdir has no config yet.

        Raises:
          RunDirError: naming each differing field with both values, and the two ways on.
        """
        if not self.has_config():
            return
        # A field newer than the workdir's config.json held its default in that run.
        defaults = flat_config(default.get_config())
        old, new = flat_config(self.read_config()), flat_config(config)
        old = {**{f: defaults.get(f) for f in CHECKPOINT_FIELDS}, **old}
        differing = [f for f in CHECKPOINT_FIELDS if old.get(f) != new.get(f)]
        if differing:
            changes = ", ".join(f"config.{f}: {old.get(f)!r} -> {new.get(f)!r}" for f in differing)
            raise RunDirError(
                f"--workdir={self} holds a run of another model ({changes}). Start fresh in "
                "another --workdir, or continue this run with the config it was made with (the "
                f"values in {self.config_file}), changing only compatible fields."
            )

    def record_config(self, config: ml_collections.ConfigDict) -> dict[str, tuple]:
        """Writes config.json; a changed compatible field is also logged to the history.

        Returns:
          field -> (old value, new value) for each field that differs from the previous
          config.json (empty for a new run or an unchanged rerun).
        """
        changes = {}
        if self.has_config():
            old, new = flat_config(self.read_config()), flat_config(config)
            changes = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())}
            changes = {k: v for k, v in changes.items() if v[0] != v[1]}
            if changes:
                line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **changes}
                history = self.path / CONFIG_HISTORY_FILE
                previous = history.read_text() if history.exists() else ""
                history.write_text(previous + json.dumps(line) + "\n")
        self.config_file.write_text(config.to_json_best_effort(indent=2))
        return changes

    def write_final_metrics(self, step: int, metrics: dict[str, float]) -> epath.Path:
        self.final_metrics_file.write_text(json.dumps({"step": int(step), **metrics}, indent=2))
        return self.final_metrics_file

    def read_final_metrics(self) -> dict[str, float] | None:
        if not self.final_metrics_file.exists():
            return None
        return json.loads(self.final_metrics_file.read_text())


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
    """A config read back from JSON, with the fields that a newer version added set to their
    defaults (so the workdirs of older versions still open); JSON lists become tuples where the
    base config has tuples."""
    from ltpa_jax.configs import default  # Local: configs import nothing from here.

    def merge(base: ml_collections.ConfigDict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
                merge(base[key], value)
            elif key in base:
                base[key] = tuple(value) if isinstance(base[key], tuple) else value
            else:
                base[key] = value  # Unknown here: validation names it.

    config = default.get_config()
    merge(config, saved)
    return config


def checkpoints_of(path: str | os.PathLike) -> epath.Path:
    """A run's checkpoint folder when `path` is its workdir; `path` itself otherwise.

    For `config.init_from`, which takes a workdir, its checkpoints/ folder or one step folder.
    """
    path = as_path(path)
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


class Run(NamedTuple):
    """A trained run opened for analysis."""

    config: ml_collections.ConfigDict
    model: Any
    variables: dict
    step: int
    rundir: RunDir


def open_run(workdir: str | os.PathLike, step: int | None = None) -> Run:
    """The config, model and variables of a training run, for analysis.

    Args:
      workdir: the run's workdir (it holds config.json and checkpoints/).
      step: the checkpoint step to read; the latest intact one when None.

    Raises:
      RunDirError: no config.json, no checkpoint, no checkpoint at `step` (the message lists
        the steps there are), a damaged checkpoint, or one that does not fit the config.
    """
    from ltpa_jax import checkpointing  # Local: checkpointing imports Orbax (slow).
    from ltpa_jax.models import create_model

    rundir = RunDir.at(workdir)
    config = rundir.read_config()
    directory = rundir.checkpoint_dir
    steps = checkpointing.list_steps(directory)
    if not steps:
        raise RunDirError(
            f"{directory} holds no checkpoint. Train first (ltpa-train --workdir={workdir} "
            "...), or point --workdir at a run that has saved one."
        )
    if step is not None and step not in steps:
        raise RunDirError(f"No checkpoint at step {step} in {directory}; there are {steps}.")
    try:
        loaded = checkpointing.load_variables(directory if step is None else directory / str(step))
    except (ValueError, OSError) as error:
        raise RunDirError(str(error)) from error
    for note in loaded.get("notes", []):
        print(f"warning: {note}", file=sys.stderr, flush=True)
    model = create_model(config)
    variables = {"params": loaded["params"], "batch_stats": loaded["batch_stats"]}
    _check_variables(model, config, variables, directory, loaded["step"])
    return Run(config, model, variables, loaded["step"], rundir)


def _check_variables(model, config, variables: dict, directory, step: int) -> None:
    """Raises RunDirError when the checkpoint's parameters do not fit the config's model."""
    shape = (1, config.image_size, config.image_size, 3)
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(shape)))
    flatten = functools.partial(flax.traverse_util.flatten_dict, sep="/")
    want = {k: tuple(v.shape) for k, v in flatten(expected["params"]).items()}
    have = {k: tuple(np.shape(v)) for k, v in flatten(variables["params"]).items()}
    if want != have:
        missing = sorted(set(want) - set(have))[:3]
        extra = sorted(set(have) - set(want))[:3]
        raise RunDirError(
            f"The checkpoint at step {step} in {directory} does not match the model of the "
            f"workdir's config.json (missing {missing}, unexpected {extra}, or other shapes). "
            "Was config.json edited, or the checkpoints copied from another run?"
        )
