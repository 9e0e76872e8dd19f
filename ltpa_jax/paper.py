"""The paper's result tables beside this project's runs: `ltpa-analyze table --runs=DIR`.

Each table row names the config (`configs/<name>.py`) that replicates a published run, the
numbers published for it (the paper's, and the reference's or the official code's own run;
spec section 7), and what a finished run of that config here reached. The runs are read from
`DIR/<config name>/`, one workdir per config (`ltpa-train --config=configs/<name>.py
--workdir=DIR/<name>`), from their own files: `config.json` and `final_metrics.json` (the last
evaluation, written when training ends), or the checkpoint steps of a run still going.

A run that does not exist is shown as missing and one without `final_metrics.json` as
unfinished: never as a number. A run whose config differs from the file it is named after
(other than in fields that do not change what is trained: intervals, paths, memory and speed
settings) is shown with its number and the differing fields, so that it is not mistaken for
a replication.

`TABLES` holds the rows as data; `format_tables(results)` is a pure function of the runs'
results; `read_run`, `collect` and `table` read a runs folder.
"""

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections

from ltpa_jax import rundir
from ltpa_jax.paths import as_path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclasses.dataclass(frozen=True)
class Row:
    """One model of a results table (errors are top-1 error, %; None: none published)."""

    model: str  # The paper's name of the model, e.g. "(VGG-att3)-concat-pc".
    config: str  # The config file's stem in configs/, also the run's folder name.
    preset: str  # model.preset of the config: "reference" or "official".
    paper: float | None = None  # The paper's number (spec section 7).
    source: str = ""  # Whose own run `source_error` is: "reference", "official" or "".
    source_error: float | None = None  # That run's number (spec section 7).
    note: str = ""  # Printed under the table.


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows of one dataset."""

    title: str
    rows: tuple[Row, ...]


_HE = (
    "pre-activation ResNet-164 as published by He et al. (2016), listed in the official "
    "repository's RESNET/README.md: {}% (not a run of the paper's code)."
)

TABLES: tuple[Table, ...] = (
    Table(
        "CIFAR-100",
        (
            Row("VGG", "cifar100_vgg", "official", 30.62, "official", 30.71),
            Row(
                "(VGG-att2)-concat-pc",
                "cifar100_vgg_att2_concat_pc",
                "official",
                None,
                "official",
                23.17,
            ),
            Row(
                "(VGG-att3)-concat-pc",
                "cifar100_vgg_att3_concat_pc_official",
                "official",
                22.97,
                "official",
                22.98,
            ),
            Row(
                "(VGG-att3)-concat-pc, before pooling",
                "cifar100_vgg_att3_concat_pc",
                "reference",
                22.97,
                "reference",
                22.62,
            ),
            Row(
                "(VGG-att3)-concat-pc, after pooling",
                "cifar100_vgg_att3_concat_pc_after",
                "reference",
                None,
                "reference",
                22.92,
            ),
            Row("(VGG-att3)-concat-dp", "cifar100_vgg_att3_concat_dp", "official"),
            Row("(VGG-att3)-indep-pc", "cifar100_vgg_att3_indep_pc", "official"),
            Row(
                "(VGG-att3)-concat-pc, sigmoid", "cifar100_vgg_att3_concat_pc_sigmoid", "reference"
            ),
            Row(
                "pre-activation ResNet-164", "cifar100_rn164", "official", note=_HE.format("24.33")
            ),
            Row("(RN-att2)-concat-pc", "cifar100_rn_att2", "official"),
        ),
    ),
    Table(
        "CIFAR-10",
        (
            Row("VGG", "cifar10_vgg", "official", None, "official", 7.70),
            Row(
                "(VGG-att2)-concat-pc",
                "cifar10_vgg_att2_concat_pc",
                "official",
                None,
                "official",
                5.42,
            ),
            Row(
                "(VGG-att3)-concat-pc",
                "cifar10_vgg_att3_concat_pc",
                "official",
                None,
                "official",
                6.45,
            ),
            Row("(VGG-att2)-indep-pc", "cifar10_vgg_att2_indep_pc", "official"),
            Row("(VGG-att3)-concat-dp", "cifar10_vgg_att3_concat_dp", "official"),
            Row("pre-activation ResNet-164", "cifar10_rn164", "official", note=_HE.format("5.46")),
            Row("(RN-att2)-concat-pc", "cifar10_rn_att2", "official"),
        ),
    ),
    Table(
        "SVHN",
        (Row("(VGG-att3)-concat-pc", "svhn_vgg_att3_concat_pc", "official"),),
    ),
    Table(
        "CUB-200-2011",
        (
            Row("VGG", "cub_vgg_official", "official", None, "official", 34.81),
            Row(
                "(VGG-att2)-concat-pc",
                "cub_vgg_att2_concat_pc_official",
                "official",
                None,
                "official",
                26.87,
            ),
            Row(
                "(VGG-att3)-concat-pc",
                "cub_vgg_att3_concat_pc_official",
                "official",
                None,
                "official",
                26.79,
            ),
            Row(
                "(VGG-att3)-concat-pc at 224x224, fine-tuned (ours)",
                "cub_vgg_att3_concat_pc",
                "reference",
                note="Ours, not a replication: no published run trained at 224x224.",
            ),
        ),
    ),
)

# Fields that do not change what a run trains (where it reads and writes, how often it logs
# and saves, memory and speed settings): a run may differ from its config file in these.
IGNORED_FIELDS = frozenset(
    {
        "data_dir",
        "manual_dir",
        "input_on_device",
        "input_on_device_max_fraction",
        "eval_batch_size",
        "half_precision_on_accelerators",
        "remat",
        "steps_per_dispatch",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "keep_best_checkpoints",
        "async_checkpoints",
        "num_picture_images",
        "init_from",
        "model.conv_impl",
    }
)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run folder holds, for the table."""

    name: str  # The run's folder name (= the config it replicates).
    status: str  # "finished", "unfinished" or "missing".
    step: int | None = None  # The step of the final evaluation, or the latest checkpoint.
    error: float | None = None  # Top-1 error, %, of the final evaluation (finished runs only).
    differs: tuple[str, ...] = ()  # "field: run value (config value)" where the run differs.


def config_fields_differing(run_config, expected) -> tuple[str, ...]:
    """The fields (not in IGNORED_FIELDS) where two configs differ, as "field: a (config: b)"."""
    run, want = rundir.flat_config(run_config), rundir.flat_config(expected)
    out = []
    for key in sorted(run.keys() | want.keys()):
        if key in IGNORED_FIELDS or run.get(key) == want.get(key):
            continue
        out.append(f"{key}: {run.get(key)!r} (config: {want.get(key)!r})")
    return tuple(out)


def load_config(name: str, config_dir: str | os.PathLike = CONFIG_DIR):
    """`configs/<name>.py`'s config, or None when there is no such file."""
    from ltpa_jax.configs import load_module  # Local: configs import nothing from here.

    path = Path(config_dir) / f"{name}.py"
    return load_module(str(path)).get_config() if path.is_file() else None


def read_run(
    workdir: str | os.PathLike, expected: ml_collections.ConfigDict | None = None
) -> RunResult:
    """The result of the run in `workdir` (named by its folder), compared with `expected`.

    Raises:
      RunDirError: a config.json or final_metrics.json that cannot be read.
    """
    path = as_path(workdir)
    name = path.name
    run = rundir.RunDir(path)
    if not run.has_config():
        return RunResult(name, "missing")
    config = run.read_config()
    differs = config_fields_differing(config, expected) if expected is not None else ()
    try:
        final = run.read_final_metrics()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise rundir.RunDirError(
            f"{run.final_metrics_file} is damaged ({error}); rerun `ltpa-train` in {path} to "
            "evaluate again."
        ) from error
    if final is None or "accuracy" not in final:
        from ltpa_jax import checkpointing  # Local: it imports Orbax (slow).

        steps = checkpointing.list_steps(run.checkpoint_dir)
        return RunResult(name, "unfinished", steps[-1] if steps else None, None, differs)
    error = 100.0 * (1.0 - float(final["accuracy"]))
    return RunResult(name, "finished", int(final["step"]), error, differs)


def collect(
    runs_dir: str | os.PathLike,
    tables: Sequence[Table] = TABLES,
    config_dir: str | os.PathLike = CONFIG_DIR,
) -> dict[str, RunResult]:
    """Every run of `runs_dir` (a folder per config name): the tables' rows and any other run.

    Raises:
      RunDirError: `runs_dir` is not a folder, or a run's files cannot be read.
    """
    root = as_path(runs_dir)
    if not root.is_dir():
        raise rundir.RunDirError(
            f"--runs={runs_dir} is not a folder. Give the folder that holds one workdir per "
            "config name (ltpa-train --config=configs/<name>.py --workdir=<folder>/<name>)."
        )
    names = [row.config for t in tables for row in t.rows]
    names += sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and child.name not in names and (child / rundir.CONFIG_FILE).exists()
    )
    return {name: read_run(root / name, load_config(name, config_dir)) for name in names}


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ours(result: RunResult | None, name: str) -> str:
    if result is None or result.status == "missing":
        return "missing"
    where = f"`{name}`, step {result.step}" if result.step is not None else f"`{name}`"
    if result.status == "unfinished":
        return f"unfinished ({where})" if result.step is not None else "unfinished (no checkpoint)"
    return f"{result.error:.2f} ({where})"


def format_tables(results: Mapping[str, RunResult], tables: Sequence[Table] = TABLES) -> str:
    """The tables as Markdown: per row the paper's, the source run's and our top-1 error.

    Args:
      results: run folder name -> its RunResult (`collect`); a row without one is missing.
      tables: the rows to print (default: `TABLES`).

    Returns:
      Markdown text: one section per table, then the runs that no row names.
    """
    lines = ["Top-1 error, %. — : no number published (spec section 7)."]
    named = set()
    for table in tables:
        lines += ["", f"### {table.title}", ""]
        lines.append("| model | config | preset | paper | reference / official run | ours |")
        lines.append("|---|---|---|---|---|---|")
        notes = []
        for row in table.rows:
            named.add(row.config)
            result = results.get(row.config)
            source = _number(row.source_error)
            if row.source_error is not None:
                source += f" ({row.source})"
            lines.append(
                f"| {row.model} | `{row.config}` | {row.preset} | {_number(row.paper)} | "
                f"{source} | {_ours(result, row.config)} |"
            )
            if row.note:
                notes.append(f"- `{row.config}`: {row.note}")
            if result is not None and result.differs:
                notes.append(
                    f"- `{row.config}`: this run differs from configs/{row.config}.py in "
                    f"{len(result.differs)} field(s): " + "; ".join(result.differs)
                )
        if notes:
            lines += [""] + notes
    others = [r for name, r in results.items() if name not in named]
    if others:
        lines += ["", "### Other runs", "", "| run | ours |", "|---|---|"]
        lines += [f"| `{r.name}` | {_ours(r, r.name)} |" for r in others]
    return "\n".join(lines) + "\n"


def table(runs_dir: str | os.PathLike) -> str:
    """`format_tables(collect(runs_dir))`: the Markdown that `ltpa-analyze table` prints."""
    return format_tables(collect(runs_dir))
