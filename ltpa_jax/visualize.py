"""Attention maps shown to people: overlays and per-image grids.

Follows the reference practice (spec section 8): each map, already upsampled to the input
resolution, is min-max scaled per image, coloured with the jet colormap and blended as
``0.6 * image + 0.4 * colored_map``. A map that is (nearly) flat, as the first tap's map often
is, is reported as such in the grid rather than hidden.

Only matplotlib's object API with the Agg canvas is used (no pyplot global state), so these
functions are safe to call from training loops, tests and headless machines.

Example:
    >>> maps = {"att2": att2_upsampled, "att3": att3_upsampled}  # each [B, H, W]
    >>> save_attention_grid("/tmp/vis.png", images, maps, labels, predictions, class_names)
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ltpa_jax.paths import write_bytes

IMAGE_WEIGHT = 0.6
"""Weight of the image in the overlay (reference practice)."""
MAP_WEIGHT = 0.4
"""Weight of the coloured map in the overlay (reference practice)."""
FLAT_TOLERANCE = 1e-6
"""A map with ``max - min`` below this is reported as flat."""
COLORMAP = "jet"

_CELL_INCHES = 1.7
_DPI = 100
_WRONG_COLOR = "#d62728"
_RIGHT_COLOR = "black"
_FLAT_COLOR = "#ffd54f"
_BOX_COLOR = "#00e676"
_PATH_COLOR = "#ffeb3b"
_TITLE_CHARS = 30
"""Image titles longer than this (about a cell's width at fontsize 7) wrap onto two lines."""


def normalize_map(attention_map: np.ndarray) -> np.ndarray:
    """Min-max scales one attention map to [0, 1].

    Args:
        attention_map: float array of any shape, e.g. ``[H, W]``.

    Returns:
        float32 array of the same shape in [0, 1]; all zeros when the map is flat
        (``max - min < FLAT_TOLERANCE``) or not finite, never NaN.
    """
    m = np.asarray(attention_map, dtype=np.float64)
    lo, hi = np.nanmin(m), np.nanmax(m)
    span = hi - lo
    if not np.isfinite(span) or span < FLAT_TOLERANCE:
        return np.zeros(m.shape, dtype=np.float32)
    return np.nan_to_num((m - lo) / span).astype(np.float32)


def is_flat(attention_map: np.ndarray) -> bool:
    """Whether a map is (nearly) constant: ``max - min < FLAT_TOLERANCE``."""
    m = np.asarray(attention_map, dtype=np.float64)
    return bool(np.ptp(m) < FLAT_TOLERANCE)


def overlay(image: np.ndarray, attention_map: np.ndarray) -> np.ndarray:
    """Blends a jet-coloured attention map over an image.

    Args:
        image: float ``[H, W, 3]`` in [0, 1] (values outside are clipped).
        attention_map: float ``[H, W]``, already at the image resolution; any range, it is
            min-max scaled per image (a constant map becomes all zeros, i.e. dark blue).

    Returns:
        float32 RGB ``[H, W, 3]`` in [0, 1]: ``0.6 * image + 0.4 * jet(scaled_map)``.

    Raises:
        ValueError: if ``image`` is not ``[H, W, 3]`` or the map is not ``[H, W]``.
    """
    image = np.asarray(image)
    attention_map = np.asarray(attention_map)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] (RGB in [0, 1]), got shape {image.shape}.")
    if attention_map.shape != image.shape[:2]:
        raise ValueError(
            f"attention_map must be [H, W] = {list(image.shape[:2])} to match the image "
            f"(upsample it to the input size first), got shape {list(attention_map.shape)}."
        )
    colored = matplotlib.colormaps[COLORMAP](normalize_map(attention_map))[..., :3]
    rgb = np.clip(image.astype(np.float32), 0.0, 1.0)
    blended = IMAGE_WEIGHT * rgb + MAP_WEIGHT * colored.astype(np.float32)
    return np.clip(blended, 0.0, 1.0).astype(np.float32)


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    """Name of class ``index`` (the index itself when no names are given)."""
    if class_names is None:
        return str(index)
    if not 0 <= index < len(class_names):
        raise ValueError(
            f"class index {index} is out of range for class_names of length {len(class_names)}."
        )
    return str(class_names[index])


def _validate(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    predictions: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """Converts the grid inputs to NumPy and checks their shapes agree.

    Returns:
        ``(images [B, H, W, 3], maps {name: [B, H, W]}, labels [B] or None, predictions [B])``.

    Raises:
        ValueError: naming the expected shape of whichever input does not match.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3] in [0, 1], got shape {list(images.shape)}.")
    b, h, w, _ = images.shape
    if not isinstance(maps, Mapping):
        raise ValueError(
            f"maps must be a dict of tap name -> [B, H, W] array, got {type(maps).__name__}."
        )
    np_maps = {}
    for name, m in maps.items():
        m = np.asarray(m)
        if m.shape != (b, h, w):
            raise ValueError(
                f"map {name!r} must be [B, H, W] = {[b, h, w]} to match images "
                f"{list(images.shape)} (upsample maps to the input size first), "
                f"got shape {list(m.shape)}."
            )
        np_maps[str(name)] = m
    out = []
    for what, arr in (("labels", labels), ("predictions", predictions)):
        if arr is None and what == "labels":
            out.append(None)
            continue
        arr = np.asarray(arr)
        if arr.shape != (b,):
            raise ValueError(
                f"{what} must be integer [B] = [{b}] to match images {list(images.shape)}, "
                f"got shape {list(arr.shape)}."
            )
        out.append(arr.astype(np.int64))
    return images, np_maps, out[0], out[1]


def _image_title(true_name: str | None, pred_name: str) -> str:
    """``"true: X / pred: Y"`` (``"pred: Y"`` without a label), wrapped when too long."""
    if true_name is None:
        return f"pred: {pred_name}"
    title = f"true: {true_name} / pred: {pred_name}"
    if len(title) > _TITLE_CHARS:
        title = f"true: {true_name} /\npred: {pred_name}"
    return title


def _map_note(raw_map: np.ndarray) -> tuple[str, str]:
    """Small caption for one map cell: its raw peak, flagged when the map is flat."""
    peak = float(np.max(raw_map))
    if is_flat(raw_map):
        return f"flat map, value {peak:.3g}", _FLAT_COLOR
    return f"peak {peak:.3g}", "white"


def attention_grid(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    predictions: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    max_images: int = 16,
    boxes: np.ndarray | None = None,
    paths: np.ndarray | None = None,
    path_patch: float = 0,
) -> Figure:
    """Draws images and their attention overlays, one row per image.

    Column 0 shows the image titled ``"true: X / pred: Y"`` (red when the prediction is
    wrong); then one column per tap, in the order of ``maps``, with the overlay, the tap name
    as column title and a caption with the map's raw peak value, or a "flat map" note when
    ``max - min < FLAT_TOLERANCE`` (such maps are shown, not hidden).

    Args:
        images: float ``[B, H, W, 3]`` in [0, 1].
        maps: tap name (e.g. ``"att1"``) -> float ``[B, H, W]`` at the image resolution.
            May be empty (a model without attention): the grid then shows only the images.
        labels: int ``[B]`` true classes, or None when unknown (titles then show only the
            prediction).
        predictions: int ``[B]`` predicted classes.
        class_names: optional names indexed by class; indices are shown when omitted.
        max_images: at most this many rows (the first ``max_images`` images).
        boxes: optional ground-truth boxes float ``[B, 4]`` (ymin, xmin, ymax, xmax in pixels),
            outlined on the image and on every overlay.
        paths: optional glimpse paths float ``[B, T, 2]`` ((y, x) pixel coordinates of each
            glimpse, e.g. `RAM.glimpse_locations`), drawn on the image as numbered points
            joined by a line (`draw_path`).
        path_patch: side in pixels of a square drawn around each point of a path (0: none).

    Returns:
        A matplotlib ``Figure`` on an Agg canvas (no pyplot state involved).

    Raises:
        ValueError: if shapes disagree (message gives the expected shapes), a class index is
            outside ``class_names``, or ``max_images < 1``.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}.")
    images, maps, labels, predictions = _validate(images, maps, labels, predictions)
    n = min(images.shape[0], max_images)
    if n == 0:
        raise ValueError("images must hold at least one image, got an empty batch [0, H, W, 3].")
    if boxes is not None:
        boxes = np.asarray(boxes, np.float32)
        if boxes.shape != (images.shape[0], 4):
            raise ValueError(
                f"boxes must be [B, 4] = [{images.shape[0]}, 4] (ymin, xmin, ymax, xmax), got "
                f"shape {list(boxes.shape)}."
            )
    if paths is not None:
        paths = np.asarray(paths, np.float32)
        if paths.ndim != 3 or paths.shape[0] != images.shape[0] or paths.shape[2] != 2:
            raise ValueError(
                f"paths must be [B, T, 2] = [{images.shape[0]}, T, 2] ((y, x) pixels of each "
                f"glimpse), got shape {list(paths.shape)}."
            )
    names = list(maps)
    ncols = 1 + len(names)
    height, width = images.shape[1:3]
    cell_h = _CELL_INCHES * height / max(height, width)
    cell_w = _CELL_INCHES * width / max(height, width)

    fig = Figure(figsize=(cell_w * ncols, (cell_h + 0.3) * n), dpi=_DPI, layout="compressed")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        image = np.clip(images[i].astype(np.float32), 0.0, 1.0)
        true_name = None if labels is None else _class_name(int(labels[i]), class_names)
        pred_name = _class_name(int(predictions[i]), class_names)
        ax = axes[i, 0]
        ax.imshow(image)
        wrong = labels is not None and labels[i] != predictions[i]
        color = _WRONG_COLOR if wrong else _RIGHT_COLOR
        ax.set_title(_image_title(true_name, pred_name), fontsize=7, color=color)
        if paths is not None:
            draw_path(ax, paths[i], path_patch)
        for j, name in enumerate(names, start=1):
            raw = maps[name][i]
            ax = axes[i, j]
            ax.imshow(overlay(image, raw))
            ax.set_title(name, fontsize=8, fontweight="bold")
            note, note_color = _map_note(raw)
            ax.text(
                0.03,
                0.03,
                note,
                transform=ax.transAxes,
                fontsize=6,
                color=note_color,
                va="bottom",
                ha="left",
                bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "linewidth": 0},
            )
        if boxes is not None:
            for ax in axes[i]:
                _outline(ax, boxes[i])
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


def draw_path(ax, path: np.ndarray, patch: float = 0) -> None:
    """Draws a glimpse path on an image axis: a line through the points, numbered 1..T.

    Args:
        ax: a matplotlib axis showing the image.
        path: float ``[T, 2]``, (y, x) pixel coordinates of each glimpse, in order.
        patch: side in pixels of a square drawn around each point (0: none), e.g. the
            foveal patch of a recurrent attention model.
    """
    path = np.asarray(path, np.float32) - 0.5  # Pixel coordinates -> imshow's axis units.
    limits = ax.get_xlim(), ax.get_ylim()  # The image's: a glimpse off its edge must not zoom out.
    ax.plot(path[:, 1], path[:, 0], "-", color=_PATH_COLOR, linewidth=1.0, alpha=0.8)
    for t, (y, x) in enumerate(path, start=1):
        if patch > 0:
            ax.add_patch(
                Rectangle(
                    (x - patch / 2, y - patch / 2),
                    patch,
                    patch,
                    fill=False,
                    edgecolor=_PATH_COLOR,
                    linewidth=0.6,
                    alpha=0.8,
                )
            )
        ax.text(
            x,
            y,
            str(t),
            fontsize=5,
            color="black",
            ha="center",
            va="center",
            bbox={"boxstyle": "circle,pad=0.15", "facecolor": _PATH_COLOR, "linewidth": 0},
            clip_on=True,
        )
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])


def _outline(ax, box: np.ndarray) -> None:
    """Draws a box (ymin, xmin, ymax, xmax in pixels, max exclusive) on an image axis."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    ax.add_patch(
        Rectangle(
            (xmin - 0.5, ymin - 0.5),
            xmax - xmin,
            ymax - ymin,
            fill=False,
            edgecolor=_BOX_COLOR,
            linewidth=1.0,
        )
    )


def save_attention_grid(
    path: str | os.PathLike[str],
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    predictions: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    max_images: int = 16,
    boxes: np.ndarray | None = None,
    paths: np.ndarray | None = None,
    path_patch: float = 0,
) -> str:
    """Writes :func:`attention_grid` as a PNG, creating the parent directory.

    Args:
        path: where to write the PNG (a local path or a URL such as gs://...).
        images: float ``[B, H, W, 3]`` in [0, 1].
        maps: tap name -> float ``[B, H, W]`` at the image resolution (may be empty).
        labels: int ``[B]`` true classes, or None when unknown.
        predictions: int ``[B]`` predicted classes.
        class_names: optional names indexed by class.
        max_images: at most this many rows.
        boxes: optional ground-truth boxes ``[B, 4]`` to outline.
        paths, path_patch: optional glimpse paths ``[B, T, 2]`` to draw, as
            :func:`attention_grid`.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: as :func:`attention_grid`.
    """
    fig = attention_grid(
        images,
        maps,
        labels,
        predictions,
        class_names,
        max_images=max_images,
        boxes=boxes,
        paths=paths,
        path_patch=path_patch,
    )
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=_DPI)
    finally:
        fig.clear()
    return os.fspath(write_bytes(path, buffer.getvalue()))


def read_png(path: str | os.PathLike[str]) -> np.ndarray:
    """A PNG file (local or URL) as uint8 `[H, W, C]`, e.g. for TensorBoard's image panel."""
    from etils import epath
    from PIL import Image

    with Image.open(io.BytesIO(epath.Path(path).read_bytes())) as image:
        return np.asarray(image)
