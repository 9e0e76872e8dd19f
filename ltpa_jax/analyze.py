r"""ltpa-analyze: measure the paper's claims on a trained run, with tables, CSVs and pictures.

Commands (one per call; the flags below are shared by the four, see --help):

    ltpa-analyze localization --workdir=/tmp/ltpa/demo
    ltpa-analyze robustness --workdir=/tmp/ltpa/demo --compare=/tmp/ltpa/demo_vgg
    ltpa-analyze probe --workdir=/tmp/ltpa/demo --probe_dataset=svhn_cropped
    ltpa-analyze table --runs=$HOME/ltpa
    ltpa-analyze probe --workdir=/tmp/ltpa/c100 --image_folder=/data/event8 \
        --image_folder_test_fraction=0.5
    ltpa-analyze localization --workdir=/tmp/ltpa/c10 --image_folder=/data/od/images \
        --image_folder_masks=/data/od/masks --image_folder_test_fraction=1

* `localization`: per tap and for the combined map, the pointing game, the attention mass in
  the ground-truth box and the Jaccard index of the thresholded map (`ltpa_jax.localization`),
  on datasets with boxes (cluttered_digits; caltech_birds2011, whose Jaccard is against its
  segmentation masks) or masks (an image folder with `--image_folder_masks`, e.g. Object
  Discovery: the pointing game and mass inside the mask), plus the attention statistics of
  every tap (any dataset) and a picture with boxes. With `--image_folder` it scores the run's
  maps on that folder instead of the run's dataset (the paper's segmentation experiment).
* `table`: the paper's result tables (`ltpa_jax.paper`) as Markdown, each row's published
  numbers beside the top-1 error of `--runs/<config name>` (missing and unfinished runs say so).
* `robustness`: top-1 accuracy against the FGSM or PGD epsilon (`robustness`) for this run and
  the `--compare` runs, as a table, a CSV and one plot.
* `probe`: the run's descriptors of `--probe_dataset` (train and test; or of the folder
  `--image_folder`) saved as .npz, and a logistic-regression probe on each (`features`), the
  paper's cross-domain experiment.

Everything is written to `--out` (default `<workdir>/analysis/`), named by split and step.
Runs on the default device, one batch at a time. Each command is a function of this module
(`localization`, `attack`, `probe`) that a notebook can call with `rundir.open_run(workdir)`.
"""

import csv
import functools
import io
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from etils import epath

from ltpa_jax import cli, data, features, paper, paths, robustness, rundir, visualize
from ltpa_jax.inference import (
    forward,
    predict_with_attention,
    predict_with_attention_jit,
    upsample_maps,
)
from ltpa_jax.localization import attention_statistics_sums, finalize, localization_sums

COMMANDS = ("localization", "robustness", "probe", "table")

_THRESHOLD = flags.DEFINE_string(
    "threshold", "otsu", "localization: segmentation threshold, 'otsu' or a value in [0, 1]."
)
_EPSILONS = flags.DEFINE_list(
    "epsilons", ["0", "1", "2", "4", "8"], "robustness: attack strengths, in /255 pixel units."
)
_ATTACK = flags.DEFINE_enum("attack", "fgsm", list(robustness.ATTACKS), "robustness: the attack.")
_PGD_STEPS = flags.DEFINE_integer("pgd_steps", 10, "robustness: iterations of PGD.", lower_bound=1)
_COMPARE = flags.DEFINE_list(
    "compare", [], "robustness: workdirs of other runs to attack and plot on the same figure."
)
_PROBE_DATASET = flags.DEFINE_string(
    "probe_dataset", None, "probe: dataset the descriptors are computed on (default: the run's)."
)
_IMAGE_FOLDER = flags.DEFINE_string(
    "image_folder",
    "",
    "localization, probe: a folder of images (layout of config.image_folder: one sub-folder per "
    "class) to analyse instead of the run's dataset.",
)
_IMAGE_FOLDER_MASKS = flags.DEFINE_string(
    "image_folder_masks", "", "With --image_folder: its masks (as config.image_folder_masks)."
)
_IMAGE_FOLDER_TEST_FRACTION = flags.DEFINE_float(
    "image_folder_test_fraction",
    0.0,
    "With --image_folder: 0 for its train/ and test/ sub-folders, else the test share of each "
    "class (1: every image is a test image), as config.image_folder_test_fraction.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_PROBE_TRAIN = flags.DEFINE_integer(
    "probe_train_images", 5000, "probe: training images of the probe dataset (<= 0: all)."
)

_RUNS = flags.DEFINE_string(
    "runs", None, "table: folder holding one workdir per config name (<runs>/<config name>/)."
)


def _progress(done: int, total: int | None, what: str) -> None:
    """One progress line, rewritten in place on a terminal."""
    end = "\r" if sys.stdout.isatty() else "\n"
    print(f"[{done}/{total if total else '?'} images] {what}", end=end, flush=True)


def _split_total(pipeline: data.Pipeline, split: str, num_images: int) -> int:
    total = pipeline.split_size(split)
    return min(total, num_images) if num_images > 0 else total


def _table(rows: dict[str, dict[str, float]], columns: Sequence[str], first: str) -> str:
    """A fixed-width text table: one row per key of `rows`, one column per name."""
    width = max(len(first), *(len(name) for name in rows)) + 2
    widths = [max(10, len(c) + 2) for c in columns]
    lines = [first.ljust(width) + "".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    for name, values in rows.items():
        cells = (f"{values[c]:.4f}" if c in values else "-" for c in columns)
        lines.append(
            name.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)


def _write_csv(path, rows: dict[str, dict[str, float]], columns: Sequence[str], first: str) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([first, *columns])
    for name, values in rows.items():
        writer.writerow([name, *(_cell(values.get(c)) for c in columns)])
    return os.fspath(paths.write_text(path, text.getvalue()))


def _cell(value) -> str:
    """A CSV cell: 6 significant digits (float32 noise left out), empty when missing."""
    return "" if value is None else f"{float(value):.6g}"


@functools.partial(jax.jit, static_argnums=(0, 5), static_argnames=("method", "layers"))
def _localization_batch(
    model, variables, images, boxes, mask, threshold, segmentation, *, method, layers
):
    """Sums of the localization scores and of the attention statistics of one batch."""
    _, raw = predict_with_attention(
        model, variables, images, upsample=False, method=method, layers=layers
    )
    maps = upsample_maps(raw, images.shape[1])
    stats = {name: attention_statistics_sums(m, mask) for name, m in raw.items()}
    if boxes is None and segmentation is None:
        return stats, {}
    scores = localization_sums(maps, boxes, mask, threshold=threshold, segmentation=segmentation)
    return stats, scores


def localization_scores(
    pipeline: data.Pipeline,
    model,
    variables,
    *,
    split: str,
    num_images: int,
    batch_size: int,
    threshold: str | float,
    method: str = "learned",
    layers: Sequence[str] | None = None,
):
    """Attention statistics and localization scores of a model over (part of) a split.

    Args:
      pipeline: the run's dataset (`data.Pipeline.from_config(run.config)`).
      model, variables: from `rundir.open_run`.
      split: "test" or "train"; num_images: images to use (<= 0: all).
      batch_size: images per forward pass.
      threshold: "otsu" or a float in [0, 1], for the segmentation Jaccard.
      method, layers: the maps scored, as for `inference.attention_maps` ("learned",
        "gradcam" at `layers`, "cam").

    Returns:
      (statistics {tap: {...}}, scores {map: {"pointing", "mass", "jaccard", "count"}} or None
      for a dataset without boxes or masks, the first batch (for pictures)).
    """
    info = pipeline.info
    scored = info.has_box or info.has_segmentation
    total = _split_total(pipeline, split, num_images)
    stats_sums, score_sums, done, first = None, None, 0, None
    for batch in pipeline.eval_batches(split, num_examples=num_images, batch_size=batch_size):
        first = batch if first is None else first
        stats, scores = _localization_batch(
            model,
            variables,
            jnp.asarray(batch["image"]),
            jnp.asarray(batch["box"]) if info.has_box else None,
            jnp.asarray(batch["mask"]),
            threshold,
            jnp.asarray(batch["segmentation"]) if info.has_segmentation else None,
            method=method,
            layers=None if layers is None else tuple(layers),
        )
        stats_sums = stats if stats_sums is None else jax.tree.map(jnp.add, stats_sums, stats)
        score_sums = scores if score_sums is None else jax.tree.map(jnp.add, score_sums, scores)
        done += int(batch["mask"].sum())
        _progress(done, total, "localization")
    scores = finalize(score_sums) if scored else None
    return finalize(stats_sums), scores, first


def parse_threshold(text: str) -> str | float:
    """--threshold as "otsu" or a float in [0, 1]."""
    try:
        value = text if text == "otsu" else float(text)
    except ValueError:
        value = None
    if value is None or (value != "otsu" and not 0.0 <= value <= 1.0):
        raise ValueError(f"--threshold={text!r} must be 'otsu' or a number in [0, 1].")
    return value


def parse_epsilons(texts: Sequence[str]) -> list[float]:
    """--epsilons (strengths in /255 units) as floats in [0, 1] units."""
    values = []
    for text in texts:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 255.0:
            raise ValueError(
                f"--epsilons={','.join(texts)}: {text!r} is not a strength in [0, 255] (/255 "
                "pixel units); give numbers, e.g. --epsilons=0,1,2,4,8."
            )
        values.append(value / 255)
    return values


def analysis_config(
    config,
    *,
    dataset: str | None = None,
    image_folder: str = "",
    image_folder_masks: str = "",
    image_folder_test_fraction: float = 0.0,
):
    """A copy of a run's config whose data fields name the data to analyse.

    Args:
      config: the run's config.
      dataset: another registered dataset (e.g. --probe_dataset), or None for the run's.
      image_folder, image_folder_masks, image_folder_test_fraction: an image folder to read
        instead (as the config fields of the same names), when `image_folder` is set.

    Raises:
      ValueError: both a dataset other than image_folder and an image folder, or masks
        without a folder.
    """
    out = config.copy_and_resolve_references()
    if image_folder:
        if dataset not in (None, "", data.registry.IMAGE_FOLDER):
            raise ValueError(
                f"--probe_dataset={dataset!r} and --image_folder={image_folder!r} name two "
                "datasets; give one of them."
            )
        out.dataset = data.registry.IMAGE_FOLDER
        out.image_folder = image_folder
        out.image_folder_masks = image_folder_masks
        out.image_folder_test_fraction = image_folder_test_fraction
    elif image_folder_masks:
        raise ValueError(
            f"--image_folder_masks={image_folder_masks!r} needs --image_folder (the images "
            "the masks belong to)."
        )
    elif dataset:
        out.dataset = dataset
    return out


def localization(
    run: rundir.Run,
    *,
    split: str = "test",
    num_images: int = -1,
    batch_size: int = 100,
    threshold: str | float = "otsu",
    out: str | None = None,
    image_folder: str = "",
    image_folder_masks: str = "",
    image_folder_test_fraction: float = 0.0,
    method: str = "learned",
    layers: Sequence[str] | None = None,
) -> dict[str, str]:
    """Pointing game, mass in box and Jaccard per tap, and attention statistics; see module.

    Args:
      run: the trained run (`rundir.open_run`).
      split, num_images, batch_size: the images scored; threshold: see `parse_threshold`.
      out: output folder (default `<workdir>/analysis/`).
      image_folder, image_folder_masks, image_folder_test_fraction: score the run's maps on
        this image folder (and its masks) instead of the run's dataset; the files written are
        then named after the folder (`localization_<folder>_<split>_step<N>.csv`).
      method, layers: the maps scored (`inference.attention_maps`): "learned" (the model's
        own), "gradcam" (at `layers`, default `posthoc.default_layers`) or "cam"; files of a
        post-hoc method are named `..._<split>_<method>_step<N>...`.

    Returns:
      what -> path of each file written (CSVs, picture).
    """
    layers = None if layers is None else tuple(layers)
    if method == "learned" and not _learned_map_names(run):
        raise ValueError(
            "This run's model sows no attention maps (model.num_taps=0, no self-attention): "
            "nothing learned to score. Score its post-hoc maps with --method=gradcam (any model) "
            "or --method=cam (plain ResNet)."
        )
    out = epath.Path(out) if out else run.rundir.analysis_dir
    data_config = analysis_config(
        run.config,
        image_folder=image_folder,
        image_folder_masks=image_folder_masks,
        image_folder_test_fraction=image_folder_test_fraction,
    )
    pipeline = data.Pipeline.from_config(data_config)
    # Files of another dataset's analysis carry its name: `<folder>_test`, not `test`.
    tag = f"{os.path.basename(os.path.normpath(image_folder))}_{split}" if image_folder else split
    tag = tag if method == "learned" else f"{tag}_{method}"
    statistics, scores, first = localization_scores(
        pipeline,
        run.model,
        run.variables,
        split=split,
        num_images=num_images,
        batch_size=batch_size,
        threshold=threshold,
        method=method,
        layers=layers,
    )
    done = int(next(iter(statistics.values()))["count"])
    written = {}
    columns = ("entropy", "peak", "peak_to_mean", "near_zero_fraction", "uniform_fraction")
    source = f"{image_folder} " if image_folder else ""
    print(f"\nAttention statistics ({done} {source}{split} images, step {run.step}):")
    print(_table(statistics, columns, "tap"))
    written["statistics"] = _write_csv(
        out / f"statistics_{tag}_step{run.step}.csv", statistics, columns, "tap"
    )
    if scores is not None:
        if pipeline.info.has_box:
            truth = "segmentation masks" if pipeline.info.has_segmentation else "boxes"
        else:  # Masks only (an image folder): pointing and mass inside the mask too.
            truth = "masks; pointing and mass inside the masks"
        print(
            f"\nLocalization ({done} {source}{split} images; Jaccard of the {threshold} "
            f"threshold against the {truth}):"
        )
        print(_table(scores, ("pointing", "mass", "jaccard"), "map"))
        written["localization"] = _write_csv(
            out / f"localization_{tag}_step{run.step}.csv",
            scores,
            ("pointing", "mass", "jaccard"),
            "map",
        )
    else:
        print(
            f"\n{image_folder or data_config.dataset} has no ground-truth boxes or masks: "
            "localization scores skipped."
        )
    # Another dataset's labels are not the model's classes: show the predictions only.
    model_classes = None if image_folder else pipeline
    written["picture"] = _localization_picture(
        pipeline,
        run,
        first,
        out / f"attention_{tag}_step{run.step}.png",
        model_classes,
        method=method,
        layers=layers,
    )
    return written


def _learned_map_names(run: rundir.Run) -> list[str]:
    """Names of the maps the run's model sows (traced with `jax.eval_shape`, no compute)."""
    size = run.config.image_size
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return list(jax.eval_shape(lambda x: forward(run.model, run.variables, x), images)["maps"])


def _localization_picture(
    pipeline: data.Pipeline,
    run: rundir.Run,
    batch,
    path,
    model_classes=None,
    *,
    method: str = "learned",
    layers: tuple[str, ...] | None = None,
) -> str:
    """The first 16 images with their overlays (and boxes), as a PNG grid.

    `model_classes`: the pipeline whose classes are the model's (labels shown), or None for
    another dataset's images (the run's class names for the predictions, no labels).
    """
    n = min(16, int(batch["mask"].sum()))
    images = jnp.asarray(batch["image"][:n])
    logits, maps = predict_with_attention_jit(
        run.model, run.variables, images, method=method, layers=layers
    )
    if model_classes is None:
        labels = None
        class_names = data.Pipeline.from_config(run.config, require_data=False).class_names
    else:
        labels, class_names = batch["label"][:n], model_classes.class_names
    return visualize.save_attention_grid(
        path,
        pipeline.denormalize(batch["image"][:n]),
        {k: np.asarray(v) for k, v in maps.items()},
        labels,
        np.asarray(logits.argmax(-1)),
        class_names,
        boxes=batch["box"][:n] if "box" in batch else None,
    )


def run_label(workdir: str, config) -> str:
    """A legend label for a run: its folder and its model, e.g. "demo (VGG-att3)"."""
    m = config.model
    backbone = {"vgg": "VGG", "resnet": f"RN-{m.depth}"}[m.backbone]
    model = f"{backbone}-att{m.num_taps}" if m.num_taps else backbone
    return f"{os.path.basename(os.path.normpath(workdir))} ({model})"


def attack(
    run: rundir.Run,
    *,
    compare: Sequence[str] = (),
    split: str = "test",
    num_images: int = -1,
    batch_size: int = 100,
    epsilons: Sequence[float] = (0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
    attack: str = "fgsm",
    pgd_steps: int = 10,
    out: str | None = None,
) -> dict[str, str]:
    """Top-1 accuracy against epsilon for this run and the `compare` runs: table and plot.

    Args:
      run: the run to attack (`rundir.open_run`); compare: workdirs of other runs.
      epsilons: attack strengths in [0, 1] pixel units; attack: "fgsm" or "pgd".
      split, num_images, batch_size, out: as for `localization`.
    """
    out = epath.Path(out) if out else run.rundir.analysis_dir
    runs = [run, *(rundir.open_run(workdir) for workdir in compare)]
    curves = {}
    for each in runs:
        label = run_label(os.fspath(each.rundir), each.config)
        pipeline = data.Pipeline.from_config(each.config)
        batches = [
            {k: b[k] for k in ("image", "label", "mask")}
            for b in pipeline.eval_batches(split, num_examples=num_images, batch_size=batch_size)
        ]
        print(f"{label}: {attack} on {sum(int(b['mask'].sum()) for b in batches)} images")
        curves[label] = robustness.accuracy_under_attack(
            each.model,
            each.variables,
            batches,
            list(epsilons),
            attack=attack,
            mean=pipeline.info.mean,
            std=pipeline.info.std,
            steps=pgd_steps,
            progress=lambda line: print("  " + line, flush=True),
        )
    rows = {
        f"{e * 255:g}/255": {label: curve[e] for label, curve in curves.items()} for e in epsilons
    }
    print(f"\nTop-1 accuracy under {attack} ({split} split):")
    print(_table(rows, list(curves), "epsilon"))
    name = f"robustness_{attack}_step{run.step}"
    return {
        "table": robustness.write_csv(curves, os.fspath(out / (name + ".csv"))),
        "plot": robustness.plot_accuracy_vs_epsilon(
            curves,
            os.fspath(out / (name + ".png")),
            title=f"{attack.upper()} on {run.config.dataset} ({split})",
        ),
    }


def probe(
    run: rundir.Run,
    *,
    probe_dataset: str | None = None,
    probe_train_images: int = 5000,
    split: str = "test",
    num_images: int = -1,
    batch_size: int = 100,
    out: str | None = None,
    image_folder: str = "",
    image_folder_test_fraction: float = 0.0,
) -> dict[str, str]:
    """Descriptors of another dataset and a linear probe on each; see `features`.

    Args:
      run: the trained run; probe_dataset: the dataset to describe (default: the run's).
      probe_train_images: training images of the probe dataset (<= 0: all).
      split, num_images, batch_size, out: the probe's test split, as for `localization`.
      image_folder, image_folder_test_fraction: describe this image folder instead (as the
        config fields of the same names); files are then named after the folder.
    """
    out = epath.Path(out) if out else run.rundir.analysis_dir
    probe_config = analysis_config(
        run.config,
        dataset=probe_dataset,
        image_folder=image_folder,
        image_folder_test_fraction=image_folder_test_fraction,
    )
    if probe_config.dataset not in data.DATASETS:
        raise ValueError(
            f"--probe_dataset={probe_config.dataset!r} is not a known dataset; use one of "
            f"{sorted(data.DATASETS)}."
        )
    pipeline = data.Pipeline.from_config(probe_config)
    name = probe_config.dataset
    if name == data.registry.IMAGE_FOLDER:
        name = os.path.basename(os.path.normpath(probe_config.image_folder))
    exported = {}
    for which, num in (("train", probe_train_images), (split, num_images)):
        total = _split_total(pipeline, which, num)
        print(f"descriptors of {total} {name} {which} images", flush=True)
        exported[which] = features.export_features(
            run.model,
            run.variables,
            pipeline.eval_batches(which, num_examples=num, batch_size=batch_size),
        )
        path = out / f"features_{name}_{which}_step{run.step}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **exported[which])
        paths.write_bytes(path, buffer.getvalue())
        print(f"  wrote {path}")
    accuracy = features.probe_all(exported["train"], exported[split])
    rows = {name: {"accuracy": value} for name, value in accuracy.items()}
    print(
        f"\nLinear probe on {name} (trained on {run.config.dataset}; "
        f"{len(exported['train']['labels'])} train / {len(exported[split]['labels'])} "
        f"{split} images):"
    )
    print(_table(rows, ("accuracy",), "descriptor"))
    return {
        "table": _write_csv(
            out / f"probe_{name}_step{run.step}.csv",
            rows,
            ("accuracy",),
            "descriptor",
        )
    }


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Give one command: ltpa-analyze {{{','.join(COMMANDS)}}} --workdir=... "
            "(ltpa-analyze --help lists them and their flags)."
        )
    if argv[1] == "table":
        if not _RUNS.value:
            raise ValueError(
                "ltpa-analyze table needs --runs=<folder>, the folder holding one workdir per "
                "config name (ltpa-train --config=configs/<name>.py --workdir=<folder>/<name>)."
            )
        print(paper.table(_RUNS.value), end="")
        return
    if not cli.WORKDIR.value:
        raise ValueError(f"ltpa-analyze {argv[1]} needs --workdir=<the workdir of a training run>.")
    shared = dict(
        split=cli.SPLIT.value,
        num_images=cli.NUM_IMAGES.value,
        batch_size=cli.BATCH_SIZE.value,
        out=cli.OUT.value,
    )
    if argv[1] == "localization":
        threshold = parse_threshold(_THRESHOLD.value)
        written = localization(
            rundir.open_run(cli.WORKDIR.value, cli.STEP.value),
            threshold=threshold,
            image_folder=_IMAGE_FOLDER.value,
            image_folder_masks=_IMAGE_FOLDER_MASKS.value,
            image_folder_test_fraction=_IMAGE_FOLDER_TEST_FRACTION.value,
            method=cli.METHOD.value,
            layers=cli.LAYERS.value,
            **shared,
        )
    elif argv[1] == "robustness":
        epsilons = parse_epsilons(_EPSILONS.value)
        written = attack(
            rundir.open_run(cli.WORKDIR.value, cli.STEP.value),
            compare=_COMPARE.value,
            epsilons=epsilons,
            attack=_ATTACK.value,
            pgd_steps=_PGD_STEPS.value,
            **shared,
        )
    else:
        written = probe(
            rundir.open_run(cli.WORKDIR.value, cli.STEP.value),
            probe_dataset=_PROBE_DATASET.value,
            probe_train_images=_PROBE_TRAIN.value,
            image_folder=_IMAGE_FOLDER.value,
            image_folder_test_fraction=_IMAGE_FOLDER_TEST_FRACTION.value,
            **shared,
        )
    for what, path in written.items():
        print(f"wrote {what}: {path}")


def run() -> None:
    """Console-script entry point (`ltpa-analyze`)."""
    cli.run(
        main,
        doc=__doc__,
        required=(),  # --workdir for localization, robustness, probe; --runs for table.
        key_flags=(
            "runs",
            "workdir",
            "step",
            "split",
            "num_images",
            "batch_size",
            "out",
            "threshold",
            "epsilons",
            "attack",
            "pgd_steps",
            "compare",
            "probe_dataset",
            "probe_train_images",
            "image_folder",
            "image_folder_masks",
            "image_folder_test_fraction",
            "method",
            "layers",
        ),
    )


if __name__ == "__main__":
    run()
