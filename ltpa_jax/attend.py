"""ltpa-attend: attention maps of a trained run for a dataset split or a folder of images.

    ltpa-attend --workdir=/tmp/ltpa/demo --num_images=64       # the first 64 test images
    ltpa-attend --workdir=/tmp/ltpa/demo --images=~/photos     # every image file in a folder
    ltpa-attend --workdir=... --step=900 --split=train         # the whole training split
    ltpa-attend --workdir=/tmp/ltpa/demo --method=gradcam      # Grad-CAM maps instead

Reads the run's config.json and its latest intact (or `--step`) Orbax checkpoint, runs the
images through the model (`inference.predict_with_attention_jit`: the learned maps, or with
`--method=gradcam` (`--layers`) or `--method=cam` the post-hoc ones) and writes to `--out`
(default `<workdir>/attention/<split or folder name>_step<N>/`, `..._<method>_step<N>/` for a
post-hoc method):

* `grid_000.png`, `grid_001.png`, ...: each image beside its overlays, 16 images per grid;
* `attention.npz`: `names` [N], `labels` [N] (-1 for image files), `predictions` [N],
  `probabilities` [N] (of the predicted class), for datasets with boxes `boxes` [N, 4], and per
  tap `map_<tap>` [N, S, S] at the input resolution and `raw_<tap>` [N, H_t, W_t] at the tap's.

An image file that cannot be decoded is reported and skipped; the others are still processed
and the command then exits with status 1.
"""

import io
import os
import sys
from collections.abc import Iterator

import jax
import numpy as np
from absl import app, flags
from etils import epath

from ltpa_jax import cli, data, paths, rundir, visualize
from ltpa_jax.inference import predict_with_attention_jit, upsample_maps

_IMAGES = flags.DEFINE_string("images", None, "Folder of image files to read instead of a split.")

GRID_IMAGES = 16  # Images per PNG grid.


def image_files(folder: str) -> list[str]:
    """The image files of a folder (by suffix, sorted); ValueError when there are none."""
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--images={folder!r} is not a folder.")
    suffixes = data.IMAGE_FILE_SUFFIXES
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(suffixes))
    if not names:
        raise ValueError(f"--images={folder!r} holds no image files (suffixes {suffixes}).")
    return [os.path.join(folder, name) for name in names]


def file_batches(
    paths: list[str], pipeline: data.Pipeline, batch_size: int, errors: list[str]
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of decoded image files; undecodable ones are appended to `errors` and skipped."""
    images, names = [], []
    for path in paths:
        try:
            images.append(pipeline.load_image_file(path))
            names.append(os.path.basename(path))
        except ValueError as error:
            errors.append(str(error))
            print(f"skipped: {error}", file=sys.stderr, flush=True)
        if len(images) == batch_size:
            yield {"image": np.stack(images), "name": np.asarray(names)}
            images, names = [], []
    if images:
        yield {"image": np.stack(images), "name": np.asarray(names)}


def split_batches(
    pipeline: data.Pipeline, split: str, num_images: int, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """The first `num_images` examples of a split (all when <= 0), without padding rows."""
    seen = 0
    for batch in pipeline.eval_batches(split, num_examples=num_images, batch_size=batch_size):
        keep = batch.pop("mask")
        if not keep.any():  # Padding only.
            continue
        out = {k: v[keep] for k, v in batch.items()}
        out["name"] = np.asarray([f"{split}[{seen + i}]" for i in range(int(keep.sum()))])
        seen += int(keep.sum())
        yield out


def extract(
    model,
    variables,
    batches,
    total: int | None,
    *,
    method: str = "learned",
    layers: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Runs every batch through the model; returns the concatenated arrays of attention.npz.

    Args:
      model, variables: as from `rundir.open_run`.
      batches: dicts with "image" [b, S, S, 3] normalised, "name" [b], optional "label" [b]
        and "box" [b, 4].
      total: images expected (for the progress lines), or None when unknown.
      method, layers: the maps, as for `inference.attention_maps`.
    """
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    layers = None if layers is None else tuple(layers)
    for batch in batches:
        images = jax.numpy.asarray(batch["image"])
        logits, raw = predict_with_attention_jit(
            model, variables, images, upsample=False, method=method, layers=layers
        )
        maps = upsample_maps(raw, images.shape[1])
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
        if hasattr(model, "glimpse_locations"):  # RAM: each image's glimpse path, in pixels.
            rows["glimpse_paths"] = model.glimpse_locations(variables, images)
        for key, value in rows.items():
            parts.setdefault(key, []).append(np.asarray(value))
        done += len(batch["name"])
        print(f"[{done}/{total if total else '?'} images]", flush=True)
    return {key: np.concatenate(value) for key, value in parts.items()}


def write_outputs(
    out: str, arrays: dict[str, np.ndarray], pipeline: data.Pipeline, *, path_patch: float = 0
) -> list[str]:
    """Writes attention.npz and the PNG grids (local folder or URL); returns the paths.

    `arrays["glimpse_paths"]` [N, T, 2] (RAM), when present, is drawn as numbered points with
    squares of side `path_patch` pixels.
    """
    out = epath.Path(out)
    npz = out / "attention.npz"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: v for k, v in arrays.items() if k != "image"})
    paths.write_bytes(npz, buffer.getvalue())
    written = [os.fspath(npz)]
    pictures = pipeline.denormalize(arrays["image"])
    maps = {k[len("map_") :]: v for k, v in arrays.items() if k.startswith("map_")}
    labels = arrays["labels"] if (arrays["labels"] >= 0).all() else None
    for index, start in enumerate(range(0, len(pictures), GRID_IMAGES)):
        rows = slice(start, start + GRID_IMAGES)
        written.append(
            visualize.save_attention_grid(
                out / f"grid_{index:03d}.png",
                pictures[rows],
                {k: v[rows] for k, v in maps.items()},
                None if labels is None else labels[rows],
                arrays["predictions"][rows],
                pipeline.class_names,
                max_images=GRID_IMAGES,
                boxes=arrays["boxes"][rows] if "boxes" in arrays else None,
                paths=arrays["glimpse_paths"][rows] if "glimpse_paths" in arrays else None,
                path_patch=path_patch,
            )
        )
    return written


def attend(
    workdir: str,
    *,
    step: int | None = None,
    split: str = "test",
    images: str | None = None,
    num_images: int = -1,
    batch_size: int = 100,
    out: str | None = None,
    method: str = "learned",
    layers: tuple[str, ...] | None = None,
) -> tuple[list[str], list[str]]:
    """Attention maps of a trained run for a split or a folder of image files, written to disk.

    Args:
      workdir: the run's workdir.
      step: checkpoint step (None: the latest intact one).
      split: "test" or "train", when `images` is None.
      images: a folder of image files to read instead of a split.
      num_images: images of the split to use (<= 0: all); a folder is read whole.
      batch_size: images per forward pass.
      out: output folder (default `<workdir>/attention/<split or folder>_step<N>/`, with
        `_<method>` after the split or folder for a post-hoc method).
      method: "learned", "gradcam" or "cam" (`inference.attention_maps`).
      layers: Grad-CAM's layers (None: `posthoc.default_layers`).

    Returns:
      (paths written, files that could not be decoded).

    Raises:
      ValueError, OSError: a workdir that is not a run, a damaged checkpoint, a missing
        dataset or folder, no decodable image at all.
    """
    run = rundir.open_run(workdir, step)
    pipeline = data.Pipeline.from_config(run.config, require_data=not images)
    errors: list[str] = []
    if images:
        paths = image_files(images)
        source = os.path.basename(os.path.normpath(os.path.expanduser(images)))
        batches, total = file_batches(paths, pipeline, batch_size, errors), len(paths)
    else:
        source, total = split, num_images if num_images > 0 else pipeline.split_size(split)
        batches = split_batches(pipeline, split, num_images, batch_size)
    if method != "learned":
        source = f"{source}_{method}"
    out = out or os.fspath(run.rundir.attention_dir(source, run.step))
    print(f"{workdir}: checkpoint at step {run.step}; writing to {out}", flush=True)
    arrays = extract(run.model, run.variables, batches, total, method=method, layers=layers)
    if not arrays:
        raise ValueError(f"no image could be read ({len(errors)} failed).")
    written = write_outputs(out, arrays, pipeline, path_patch=getattr(run.model, "glimpse_size", 0))
    print(f"wrote {len(arrays['names'])} images: {', '.join(written)}")
    return written, errors


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    _, errors = attend(
        cli.WORKDIR.value,
        step=cli.STEP.value,
        split=cli.SPLIT.value,
        images=_IMAGES.value,
        num_images=cli.NUM_IMAGES.value,
        batch_size=cli.BATCH_SIZE.value,
        out=cli.OUT.value,
        method=cli.METHOD.value,
        layers=cli.LAYERS.value,
    )
    if errors:
        print(f"{len(errors)} file(s) could not be read; see 'skipped:' above.", file=sys.stderr)
        sys.exit(1)


def run() -> None:
    """Console-script entry point (`ltpa-attend`)."""
    cli.run(
        main,
        doc=__doc__,
        key_flags=(
            "workdir",
            "step",
            "split",
            "images",
            "num_images",
            "batch_size",
            "out",
            "method",
            "layers",
        ),
    )


if __name__ == "__main__":
    run()
