"""Command line: measure the paper's claims on a trained run, with tables, CSVs and pictures.

    ltpa-analyze localization --workdir=/tmp/ltpa/demo
    ltpa-analyze robustness --workdir=/tmp/ltpa/demo --compare=/tmp/ltpa/demo_vgg
    ltpa-analyze probe --workdir=/tmp/ltpa/demo --probe_dataset=svhn_cropped

* `localization`: per tap and for the combined map, the pointing game, the attention mass in
  the ground-truth box and the Jaccard index of the thresholded map (`evaluate`), on datasets
  with boxes (cluttered_digits; caltech_birds2011, whose Jaccard is against its segmentation
  masks), plus the attention statistics of every tap (any dataset) and a picture with boxes.
* `robustness`: top-1 accuracy against the FGSM or PGD epsilon (`robustness`) for this run and
  the `--compare` runs, as a table, a CSV and one plot.
* `probe`: the run's descriptors of `--probe_dataset` (train and test) saved as .npz, and a
  logistic-regression probe on each (`features`), the paper's cross-domain experiment.

Everything is written to `--out` (default `<workdir>/analysis/`), named by split and step.
Runs on the default device, one batch at a time.
"""

import csv
import functools
import os
import sys
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ltpa_jax import checkpointing, cli, features, input_pipeline, robustness, visualize
from ltpa_jax.localization import attention_statistics_sums, finalize, localization_sums
from ltpa_jax.inference import predict_with_attention, upsample_maps

COMMANDS = ("localization", "robustness", "probe")

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training run's workdir (config.json, checkpoints/)."
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to read (default: the latest).")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Split to evaluate on.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", -1, "Images of the split to use (<= 0: all).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Images per forward pass.")
_THRESHOLD = flags.DEFINE_string(
    "threshold", "otsu", "localization: segmentation threshold, 'otsu' or a value in [0, 1]."
)
_EPSILONS = flags.DEFINE_list(
    "epsilons", ["0", "1", "2", "4", "8"], "robustness: attack strengths, in /255 pixel units."
)
_ATTACK = flags.DEFINE_enum("attack", "fgsm", ["fgsm", "pgd"], "robustness: the attack.")
_PGD_STEPS = flags.DEFINE_integer("pgd_steps", 10, "robustness: iterations of PGD.")
_COMPARE = flags.DEFINE_list(
    "compare", [], "robustness: workdirs of other runs to attack and plot on the same figure."
)
_PROBE_DATASET = flags.DEFINE_string(
    "probe_dataset", None, "probe: dataset the descriptors are computed on (default: the run's)."
)
_PROBE_TRAIN = flags.DEFINE_integer(
    "probe_train_images", 5000, "probe: training images of the probe dataset (<= 0: all)."
)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/analysis).")


def _batches(config, split: str, num_images: int) -> Iterator[dict[str, np.ndarray]]:
    """Padded evaluation batches of a split, the rows past `num_images` masked out."""
    return input_pipeline.first_examples(input_pipeline.eval_batches(config, split), num_images)


def _progress(done: int, total: int | None, what: str) -> None:
    """One progress line, rewritten in place on a terminal."""
    end = "\r" if sys.stdout.isatty() else "\n"
    print(f"[{done}/{total if total else '?'} images] {what}", end=end, flush=True)


def _split_total(config, split: str, num_images: int) -> int:
    total = input_pipeline.split_size(config, split)
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


def _write_csv(path: str, rows: dict[str, dict[str, float]], columns: Sequence[str], first: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([first, *columns])
        for name, values in rows.items():
            writer.writerow([name, *(_cell(values.get(c)) for c in columns)])
    return path


def _cell(value) -> str:
    """A CSV cell: 6 significant digits (float32 noise left out), empty when missing."""
    return "" if value is None else f"{float(value):.6g}"


@functools.partial(jax.jit, static_argnums=(0, 5))
def _localization_batch(model, variables, images, boxes, mask, threshold, segmentation):
    """Sums of the localization scores and of the attention statistics of one batch."""
    _, raw = predict_with_attention(model, variables, images, upsample=False)
    maps = upsample_maps(raw, images.shape[1])
    stats = {name: attention_statistics_sums(m, mask) for name, m in raw.items()}
    if boxes is None:
        return stats, {}
    scores = localization_sums(maps, boxes, mask, threshold=threshold, segmentation=segmentation)
    return stats, scores


def localization_scores(config, model, variables, split: str, num_images: int, threshold):
    """Attention statistics and localization scores of a model over (part of) a split.

    Args:
      config: the run's config (dataset, image size, eval_batch_size).
      model, variables: from `checkpointing.load_run`.
      split: "test" or "train"; num_images: images to use (<= 0: all).
      threshold: "otsu" or a float in [0, 1], for the segmentation Jaccard.

    Returns:
      (statistics {tap: {...}}, scores {map: {"pointing", "mass", "jaccard", "count"}} or None
      for a dataset without boxes, the first batch (for pictures)).
    """
    info = input_pipeline.get_dataset_info(config.dataset)
    if not config.model.num_taps:
        raise ValueError("This run's model has no attention (model.num_taps=0): nothing to score.")
    total = _split_total(config, split, num_images)
    stats_sums, score_sums, done, first = None, None, 0, None
    for batch in _batches(config, split, num_images):
        first = batch if first is None else first
        stats, scores = _localization_batch(
            model,
            variables,
            jnp.asarray(batch["image"]),
            jnp.asarray(batch["box"]) if info.has_box else None,
            jnp.asarray(batch["mask"]),
            threshold,
            jnp.asarray(batch["segmentation"]) if info.has_segmentation else None,
        )
        stats_sums = stats if stats_sums is None else jax.tree.map(jnp.add, stats_sums, stats)
        score_sums = scores if score_sums is None else jax.tree.map(jnp.add, score_sums, scores)
        done += int(batch["mask"].sum())
        _progress(done, total, "localization")
    scores = finalize(score_sums) if info.has_box else None
    return finalize(stats_sums), scores, first


def _threshold(text: str) -> str | float:
    """--threshold as "otsu" or a float in [0, 1]."""
    try:
        value = text if text == "otsu" else float(text)
    except ValueError:
        value = None
    if value is None or (value != "otsu" and not 0.0 <= value <= 1.0):
        raise ValueError(f"--threshold={text!r} must be 'otsu' or a number in [0, 1].")
    return value


def localization_command(config, model, variables, step, out) -> dict[str, str]:
    """Pointing game, mass in box and Jaccard per tap, and attention statistics; see module."""
    info = input_pipeline.get_dataset_info(config.dataset)
    threshold = _threshold(_THRESHOLD.value)
    statistics, scores, first = localization_scores(
        config, model, variables, _SPLIT.value, _NUM_IMAGES.value, threshold
    )
    done = int(next(iter(statistics.values()))["count"])
    written = {}
    columns = ("entropy", "peak", "peak_to_mean", "near_zero_fraction", "uniform_fraction")
    print(f"\nAttention statistics ({done} {_SPLIT.value} images, step {step}):")
    print(_table(statistics, columns, "tap"))
    written["statistics"] = _write_csv(
        os.path.join(out, f"statistics_{_SPLIT.value}_step{step}.csv"), statistics, columns, "tap"
    )
    if scores is not None:
        truth = "segmentation masks" if info.has_segmentation else "boxes"
        print(
            f"\nLocalization ({done} {_SPLIT.value} images; Jaccard of the {threshold} "
            f"threshold against the {truth}):"
        )
        print(_table(scores, ("pointing", "mass", "jaccard"), "map"))
        written["localization"] = _write_csv(
            os.path.join(out, f"localization_{_SPLIT.value}_step{step}.csv"),
            scores,
            ("pointing", "mass", "jaccard"),
            "map",
        )
    else:
        print(f"\n{config.dataset} has no ground-truth boxes: localization scores skipped.")
    written["picture"] = _localization_picture(config, model, variables, first, out, step)
    return written


def _localization_picture(config, model, variables, batch, out, step) -> str:
    """The first 16 images with their overlays (and boxes), as a PNG grid."""
    n = min(16, int(batch["mask"].sum()))
    images = jnp.asarray(batch["image"][:n])
    logits, maps = jax.jit(predict_with_attention, static_argnums=0)(model, variables, images)
    return visualize.save_attention_grid(
        os.path.join(out, f"attention_{_SPLIT.value}_step{step}.png"),
        input_pipeline.denormalize(batch["image"][:n], config.dataset),
        {k: np.asarray(v) for k, v in maps.items()},
        batch["label"][:n],
        np.asarray(logits.argmax(-1)),
        input_pipeline.class_names(config),
        boxes=batch["box"][:n] if "box" in batch else None,
    )


def run_label(workdir: str, config) -> str:
    """A legend label for a run: its folder and its model, e.g. "demo (VGG-att3)"."""
    m = config.model
    backbone = {"vgg": "VGG", "resnet": f"RN-{m.depth}"}[m.backbone]
    model = f"{backbone}-att{m.num_taps}" if m.num_taps else backbone
    return f"{os.path.basename(os.path.normpath(workdir))} ({model})"


def robustness_command(config, model, variables, step, out) -> dict[str, str]:
    """Top-1 accuracy against epsilon for this run and the --compare runs, table and plot."""
    epsilons = [float(e) / 255 for e in _EPSILONS.value]
    runs = [(_WORKDIR.value, config, model, variables)]
    for workdir in _COMPARE.value:
        other_config, other_model, other_variables, _ = checkpointing.load_run(workdir)
        runs.append((workdir, other_config, other_model, other_variables))
    curves = {}
    for workdir, run_config, run_model, run_variables in runs:
        label = run_label(workdir, run_config)
        info = input_pipeline.get_dataset_info(run_config.dataset)
        run_config.eval_batch_size = _BATCH_SIZE.value
        batches = [
            {k: b[k] for k in ("image", "label", "mask")}
            for b in _batches(run_config, _SPLIT.value, _NUM_IMAGES.value)
        ]
        print(f"{label}: {_ATTACK.value} on {sum(int(b['mask'].sum()) for b in batches)} images")
        curves[label] = robustness.accuracy_under_attack(
            run_model,
            run_variables,
            batches,
            epsilons,
            attack=_ATTACK.value,
            mean=info.mean,
            std=info.std,
            steps=_PGD_STEPS.value,
            progress=lambda line: print("  " + line, flush=True),
        )
    rows = {
        f"{e * 255:g}/255": {label: curve[e] for label, curve in curves.items()} for e in epsilons
    }
    print(f"\nTop-1 accuracy under {_ATTACK.value} ({_SPLIT.value} split):")
    print(_table(rows, list(curves), "epsilon"))
    name = f"robustness_{_ATTACK.value}_step{step}"
    return {
        "table": robustness.write_csv(curves, os.path.join(out, name + ".csv")),
        "plot": robustness.plot_accuracy_vs_epsilon(
            curves,
            os.path.join(out, name + ".png"),
            title=f"{_ATTACK.value.upper()} on {config.dataset} ({_SPLIT.value})",
        ),
    }


def probe_command(config, model, variables, step, out) -> dict[str, str]:
    """Descriptors of another dataset and a linear probe on each; see `features`."""
    probe_config = config.copy_and_resolve_references()
    probe_config.dataset = _PROBE_DATASET.value or config.dataset
    probe_config.eval_batch_size = _BATCH_SIZE.value
    input_pipeline.check_dataset(probe_config)
    exported = {}
    for split, num in (("train", _PROBE_TRAIN.value), (_SPLIT.value, _NUM_IMAGES.value)):
        total = _split_total(probe_config, split, num)
        print(f"descriptors of {total} {probe_config.dataset} {split} images", flush=True)
        exported[split] = features.export_features(
            model, variables, _batches(probe_config, split, num)
        )
        path = os.path.join(out, f"features_{probe_config.dataset}_{split}_step{step}.npz")
        os.makedirs(out, exist_ok=True)
        np.savez_compressed(path, **exported[split])
        print(f"  wrote {path}")
    accuracy = features.probe_all(exported["train"], exported[_SPLIT.value])
    rows = {name: {"accuracy": value} for name, value in accuracy.items()}
    print(
        f"\nLinear probe on {probe_config.dataset} (trained on {config.dataset}; "
        f"{len(exported['train']['labels'])} train / {len(exported[_SPLIT.value]['labels'])} "
        f"{_SPLIT.value} images):"
    )
    print(_table(rows, ("accuracy",), "descriptor"))
    return {
        "table": _write_csv(
            os.path.join(out, f"probe_{probe_config.dataset}_step{step}.csv"),
            rows,
            ("accuracy",),
            "descriptor",
        )
    }


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Give one command: ltpa-analyze {{{','.join(COMMANDS)}}} --workdir=..."
        )
    command = {
        "localization": localization_command,
        "robustness": robustness_command,
        "probe": probe_command,
    }[argv[1]]
    cli.quiet_unless_verbose()
    try:
        config, model, variables, step = checkpointing.load_run(_WORKDIR.value, _STEP.value)
        config.eval_batch_size = _BATCH_SIZE.value
        input_pipeline.check_dataset(config)
        out = _OUT.value or os.path.join(_WORKDIR.value, "analysis")
        written = command(config, model, variables, step, out)
    except (ValueError, FileNotFoundError) as error:
        cli.fail(error)
    for what, path in written.items():
        print(f"wrote {what}: {path}")


def run() -> None:
    """Console-script entry point (`ltpa-analyze`)."""
    cli.rerun_with_huge_pages()
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
