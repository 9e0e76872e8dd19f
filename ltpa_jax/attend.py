"""Command line: attention maps of a trained run for a dataset split or a folder of images.

    ltpa-attend --workdir=/tmp/ltpa/demo                       # 64 test images
    ltpa-attend --workdir=/tmp/ltpa/demo --images=~/photos     # every image file in a folder
    python -m ltpa_jax.attend --workdir=... --step=900 --split=train --num_images=256

Reads the run's config.json and its latest (or `--step`) Orbax checkpoint, runs the images
through `predict_with_attention` and writes to `--out` (default
`<workdir>/attention/<split or folder name>_step<N>/`):

* `grid_000.png`, `grid_001.png`, ...: each image beside its overlays, 16 images per grid;
* `attention.npz`: `names` [N], `labels` [N] (-1 for image files), `predictions` [N],
  `probabilities` [N] (of the predicted class), for datasets with boxes `boxes` [N, 4], and per
  tap `map_<tap>` [N, S, S] at the input resolution and `raw_<tap>` [N, H_t, W_t] at the tap's.

An image file that cannot be decoded is reported and skipped; the others are still processed
and the command then exits with status 1.
"""

import functools
import os
import sys
from collections.abc import Iterator

import jax
import numpy as np
from absl import app, flags

from ltpa_jax import checkpointing, cli, input_pipeline, visualize
from ltpa_jax.inference import predict_with_attention, upsample_maps

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Workdir of a training run (config.json, checkpoints/)."
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to read (default: the latest).")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Dataset split to read.")
_IMAGES = flags.DEFINE_string("images", None, "Folder of image files to read instead of a split.")
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 64, "Images to take from the split (<= 0: all); a folder is read whole."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/attention/...).")

GRID_IMAGES = 16  # Images per PNG grid.


def image_files(folder: str) -> list[str]:
    """The image files of a folder (by suffix, sorted); ValueError when there are none."""
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--images={folder!r} is not a folder.")
    suffixes = input_pipeline.IMAGE_FILE_SUFFIXES
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(suffixes))
    if not names:
        raise ValueError(f"--images={folder!r} holds no image files (suffixes {suffixes}).")
    return [os.path.join(folder, name) for name in names]


def file_batches(
    paths: list[str], config, batch_size: int, errors: list[str]
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of decoded image files; undecodable ones are appended to `errors` and skipped."""
    images, names = [], []
    for path in paths:
        try:
            images.append(input_pipeline.load_image_file(path, config))
            names.append(os.path.basename(path))
        except ValueError as error:
            errors.append(str(error))
            print(f"skipped: {error}", file=sys.stderr, flush=True)
        if len(images) == batch_size:
            yield {"image": np.stack(images), "name": np.asarray(names)}
            images, names = [], []
    if images:
        yield {"image": np.stack(images), "name": np.asarray(names)}


def split_batches(config, split: str, num_images: int) -> Iterator[dict[str, np.ndarray]]:
    """The first `num_images` examples of a split (all when <= 0), without padding rows."""
    seen = 0
    batches = input_pipeline.eval_batches(config, split)
    for batch in input_pipeline.first_examples(batches, num_images):
        keep = batch.pop("mask")
        if not keep.any():  # Padding only.
            continue
        out = {k: v[keep] for k, v in batch.items()}
        out["name"] = np.asarray([f"{split}[{seen + i}]" for i in range(int(keep.sum()))])
        seen += int(keep.sum())
        yield out


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, variables, images):
    """(logits, maps at the taps' resolution, maps at the input resolution)."""
    logits, raw = predict_with_attention(model, variables, images, upsample=False)
    return logits, raw, upsample_maps(raw, images.shape[1])


def extract(model, variables, batches, total: int | None) -> dict[str, np.ndarray]:
    """Runs every batch through the model; returns the concatenated arrays of attention.npz.

    Args:
      model, variables: as from `checkpointing.load_run`.
      batches: dicts with "image" [b, S, S, 3] normalised, "name" [b], optional "label" [b]
        and "box" [b, 4].
      total: images expected (for the progress lines), or None when unknown.
    """
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    for batch in batches:
        images = jax.numpy.asarray(batch["image"])
        logits, raw, maps = _forward(model, variables, images)
        probabilities = jax.nn.softmax(logits.astype(np.float32), axis=-1)
        rows = {
            "image": batch["image"],
            "names": batch["name"],
            "labels": batch.get("label", np.full(len(batch["name"]), -1, np.int32)),
            "predictions": np.asarray(logits.argmax(-1), np.int32),
            "probabilities": np.asarray(probabilities.max(-1)),
            **{f"map_{k}": np.asarray(v) for k, v in maps.items()},
            **{f"raw_{k}": np.asarray(v) for k, v in raw.items()},
        }
        if "box" in batch:
            rows["boxes"] = batch["box"]
        for key, value in rows.items():
            parts.setdefault(key, []).append(np.asarray(value))
        done += len(batch["name"])
        print(f"[{done}/{total if total else '?'} images]", flush=True)
    return {key: np.concatenate(value) for key, value in parts.items()}


def write_outputs(out: str, arrays: dict[str, np.ndarray], config) -> list[str]:
    """Writes attention.npz and the PNG grids; returns the paths written."""
    os.makedirs(out, exist_ok=True)
    npz = os.path.join(out, "attention.npz")
    np.savez_compressed(npz, **{k: v for k, v in arrays.items() if k != "image"})
    written = [npz]
    pictures = input_pipeline.denormalize(arrays["image"], config.dataset)
    maps = {k[len("map_") :]: v for k, v in arrays.items() if k.startswith("map_")}
    labels = arrays["labels"] if (arrays["labels"] >= 0).all() else None
    names = input_pipeline.class_names(config)
    for index, start in enumerate(range(0, len(pictures), GRID_IMAGES)):
        rows = slice(start, start + GRID_IMAGES)
        written.append(
            visualize.save_attention_grid(
                os.path.join(out, f"grid_{index:03d}.png"),
                pictures[rows],
                {k: v[rows] for k, v in maps.items()},
                None if labels is None else labels[rows],
                arrays["predictions"][rows],
                names,
                max_images=GRID_IMAGES,
                boxes=arrays["boxes"][rows] if "boxes" in arrays else None,
            )
        )
    return written


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    cli.quiet_unless_verbose()
    try:
        config, model, variables, step = checkpointing.load_run(_WORKDIR.value, _STEP.value)
        errors: list[str] = []
        if _IMAGES.value:
            paths = image_files(_IMAGES.value)
            source = os.path.basename(os.path.normpath(os.path.expanduser(_IMAGES.value)))
            batches, total = file_batches(paths, config, _BATCH_SIZE.value, errors), len(paths)
        else:
            config.eval_batch_size = _BATCH_SIZE.value
            input_pipeline.check_dataset(config)
            source, total = _SPLIT.value, _NUM_IMAGES.value if _NUM_IMAGES.value > 0 else None
            batches = split_batches(config, _SPLIT.value, _NUM_IMAGES.value)
    except (ValueError, FileNotFoundError) as error:
        cli.fail(error)
    out = _OUT.value or os.path.join(_WORKDIR.value, "attention", f"{source}_step{step}")
    print(f"{_WORKDIR.value}: checkpoint at step {step}; writing to {out}", flush=True)
    arrays = extract(model, variables, batches, total)
    if not arrays:
        print(f"error: no image could be read ({len(errors)} failed).", file=sys.stderr)
        sys.exit(1)
    written = write_outputs(out, arrays, config)
    print(f"wrote {len(arrays['names'])} images: {', '.join(written)}")
    if errors:
        print(f"{len(errors)} file(s) could not be read; see 'skipped:' above.", file=sys.stderr)
        sys.exit(1)


def run() -> None:
    """Console-script entry point (`ltpa-attend`)."""
    cli.rerun_with_huge_pages()
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
