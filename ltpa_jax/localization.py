"""Weakly supervised localization and segmentation scores, and attention statistics.

Localization scores take attention maps upsampled to the input resolution, ``[B, S, S]``, and
boxes ``[B, 4]`` as ``(ymin, xmin, ymax, xmax)`` in input pixels with the max exclusive; a pixel
``(y, x)`` belongs to a box when its centre ``(y + 0.5, x + 0.5)`` does. Datasets with
foreground masks and no boxes (an image folder with masks, such as Object Discovery) score the
pointing game and the mass inside the mask (`pointing_game_in_mask`,
`attention_mass_in_mask`). Attention statistics take the maps of one tap at the tap's own
resolution, ``[B, H, W]``.

Everything here is a pure function of arrays, usable under ``jax.jit`` (string and float
thresholds static). For evaluation over many (padded) batches, accumulate the ``*_sums``
functions with a row mask and divide at the end:

    >>> step = jax.jit(localization_sums, static_argnames="threshold")
    >>> totals = None
    >>> for maps, boxes, mask in batches:
    ...     sums = step(maps, boxes, mask)
    ...     totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    >>> finalize(totals)  # {"att2": {"pointing": 0.61, "mass": 0.42, ...}, "combined": ...}
"""

import math
import numbers
from collections.abc import Mapping

import jax
import jax.numpy as jnp

OTSU_BINS = 256
"""Histogram bins of `otsu_threshold` over [0, 1]."""
FLAT_RELATIVE_TOLERANCE = 1e-5
"""`segment` treats a map whose ``max - min`` is at most this fraction of its largest absolute
value as flat (all False); float rounding in upsampling a constant map stays below it."""
NEAR_ZERO_PEAK = 1e-3
"""A map whose raw max is below this is near zero: a sigmoid tap that switched off, or a
softmax tap spread uniformly over >= 1000 locations (the dead-tap symptom of the reference
implementation)."""
UNIFORM_PEAK_TO_MEAN = 1.5
"""A map whose ``max / mean`` is below this is (nearly) uniform: no location gets 1.5x the
average attention."""
COMBINED = "combined"
"""Key of the combined map of all taps in `localization_sums` (only with two taps or more)."""


def _check_maps(maps: jax.Array, name: str = "maps", *, square: bool = True) -> None:
    """Raises a ValueError unless ``maps`` is a batch [B, S, S] ([B, H, W] if not square)."""
    shape = getattr(maps, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{name} must be a batch of maps [B, H, W] (rank 3); got shape {shape}. "
            "For a single map use map[None]."
        )
    if square and shape[1] != shape[2]:
        raise ValueError(
            f"{name} must be square [B, S, S] at the input resolution; got {shape[1]}x{shape[2]}. "
            "Upsample the maps to the input size (inference.attention_maps(upsample=True))."
        )


def _check_rows(array: jax.Array, name: str, batch: int, trailing: tuple[int, ...]) -> None:
    """Raises a ValueError unless ``array`` has shape ``[batch, *trailing]``."""
    expected = (batch, *trailing)
    shape = getattr(array, "shape", None)
    if shape is None or tuple(shape) != expected:
        described = "[B, " + ", ".join(str(d) for d in trailing) + "]" if trailing else "[B]"
        raise ValueError(
            f"{name} must have shape {described} = {list(expected)} to match the maps; "
            f"got shape {None if shape is None else list(shape)}."
        )


def _row_weights(mask: jax.Array | None, batch: int) -> jax.Array:
    """Float32 [B] weights: 1 for rows that count (all of them when ``mask`` is None)."""
    if mask is None:
        return jnp.ones((batch,), jnp.float32)
    _check_rows(mask, "mask", batch, ())
    return jnp.asarray(mask).astype(jnp.float32)


def box_mask(boxes: jax.Array, size: int) -> jax.Array:
    """Pixels inside each box.

    Args:
      boxes: float [B, 4] as (ymin, xmin, ymax, xmax) in input pixels, max exclusive.
      size: the side S of the square input (static).

    Returns:
      [B, S, S] bool: pixel (y, x) is True iff ``ymin <= y + 0.5 < ymax`` and
      ``xmin <= x + 0.5 < xmax``. An inverted box is empty.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes must be [B, 4] as (ymin, xmin, ymax, xmax) in input pixels; "
            f"got shape {list(boxes.shape)}."
        )
    centres = jnp.arange(size, dtype=jnp.float32) + 0.5
    ymin, xmin, ymax, xmax = (boxes[:, i, None] for i in range(4))
    rows = (ymin <= centres) & (centres < ymax)  # [B, S]
    cols = (xmin <= centres) & (centres < xmax)  # [B, S]
    return rows[:, :, None] & cols[:, None, :]


def _region(target: jax.Array) -> jax.Array:
    """A bool region [B, H, W] from a bool mask or a float one in [0, 1] (> 0.5)."""
    target = jnp.asarray(target)
    return target if target.dtype == jnp.bool_ else target > 0.5


def pointing_game_in_mask(maps: jax.Array, region: jax.Array) -> jax.Array:
    """Whether each map's arg-max falls inside its region (e.g. a segmentation mask).

    Args:
      maps: [B, S, S], upsampled to the input resolution.
      region: [B, S, S] bool, or float in [0, 1] (binarised at > 0.5).

    Returns:
      [B] bool: True when the arg-max pixel (the first one on ties) is in the region.
    """
    _check_maps(maps)
    b, s, _ = maps.shape
    _check_rows(region, "region", b, (s, s))
    index = jnp.argmax(jnp.reshape(maps, (b, s * s)), axis=-1)
    inside = jnp.reshape(_region(region), (b, s * s))
    return jnp.take_along_axis(inside, index[:, None], axis=-1)[:, 0]


def attention_mass_in_mask(maps: jax.Array, region: jax.Array) -> jax.Array:
    """Fraction of each map's mass inside its region, negatives clipped to 0.

    Args:
      maps: [B, S, S], upsampled to the input resolution.
      region: [B, S, S] bool, or float in [0, 1] (binarised at > 0.5).

    Returns:
      [B] float32 in [0, 1]: the region's area fraction for a uniform map, 1 for a map
      concentrated in the region, 0 for a map of all zeros.
    """
    _check_maps(maps)
    b, s, _ = maps.shape
    _check_rows(region, "region", b, (s, s))
    mass = jnp.clip(jnp.asarray(maps, jnp.float32), 0.0)
    total = jnp.sum(mass, axis=(1, 2))
    inside = jnp.sum(jnp.where(_region(region), mass, 0.0), axis=(1, 2))
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), 0.0)


def pointing_game(maps: jax.Array, boxes: jax.Array) -> jax.Array:
    """Whether each map's arg-max falls inside its box (pointing game hit).

    Args:
      maps: [B, S, S], upsampled to the input resolution.
      boxes: float [B, 4] as (ymin, xmin, ymax, xmax) in input pixels, max exclusive.

    Returns:
      [B] bool: True when the centre of the arg-max pixel (the first one on ties) is in the box.
    """
    _check_maps(maps)
    b, s, _ = maps.shape
    _check_rows(boxes, "boxes", b, (4,))
    return pointing_game_in_mask(maps, box_mask(boxes, s))


def attention_mass_in_box(maps: jax.Array, boxes: jax.Array) -> jax.Array:
    """Fraction of each map's mass inside its box, negatives clipped to 0.

    Args:
      maps: [B, S, S], upsampled to the input resolution.
      boxes: float [B, 4] as (ymin, xmin, ymax, xmax) in input pixels, max exclusive.

    Returns:
      [B] float32 in [0, 1]: the box's area fraction for a uniform map, 1 for a map
      concentrated in the box, 0 for a map of all zeros.
    """
    _check_maps(maps)
    b, s, _ = maps.shape
    _check_rows(boxes, "boxes", b, (4,))
    return attention_mass_in_mask(maps, box_mask(boxes, s))


def combine_maps(maps: Mapping[str, jax.Array]) -> jax.Array:
    """The combined map of several taps: each map normalised to sum 1, then averaged.

    Normalising first makes taps with different numbers of locations (softmax maps sum to 1,
    sigmoid maps to up to H*W) weigh the same. A map that sums to 0 stays 0.

    Args:
      maps: tap name -> non-negative map [B, S, S], all upsampled to the same resolution.

    Returns:
      [B, S, S] float32.
    """
    if not maps:
        raise ValueError("maps is empty: pass at least one tap's map {name: [B, S, S]}.")
    shapes = {name: tuple(getattr(m, "shape", ())) for name, m in maps.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"all maps must have the same shape [B, S, S] to be combined; got {shapes}. "
            "Upsample every tap's map to the input size (inference.attention_maps(upsample=True))."
        )
    for name, m in maps.items():
        _check_maps(m, f"maps[{name!r}]", square=False)
    normalised = []
    for m in maps.values():
        m = jnp.asarray(m, jnp.float32)
        total = jnp.sum(m, axis=(1, 2), keepdims=True)
        normalised.append(jnp.where(total > 0, m / jnp.where(total > 0, total, 1.0), 0.0))
    return sum(normalised) / len(normalised)


def _otsu_parts(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Between-class variance of each candidate threshold k / OTSU_BINS, k = 1..OTSU_BINS-1.

    Returns:
      (variance [OTSU_BINS - 1] float32, unnormalised, -1 where a class is empty;
      thresholds [OTSU_BINS - 1] float32).
    """
    v = jnp.ravel(jnp.asarray(values, jnp.float32))
    bins = jnp.clip(jnp.floor(v * OTSU_BINS), 0, OTSU_BINS - 1).astype(jnp.int32)
    counts = jnp.zeros((OTSU_BINS,), jnp.float32).at[bins].add(1.0)
    sums = jnp.zeros((OTSU_BINS,), jnp.float32).at[bins].add(v)
    # Class 0: bins 0..k-1 (values < k / OTSU_BINS); class 1: the rest.
    w0 = jnp.cumsum(counts)[:-1]
    s0 = jnp.cumsum(sums)[:-1]
    w1 = v.size - w0
    s1 = jnp.sum(sums) - s0
    valid = (w0 > 0) & (w1 > 0)
    mu0 = s0 / jnp.where(valid, w0, 1.0)
    mu1 = s1 / jnp.where(valid, w1, 1.0)
    variance = jnp.where(valid, w0 * w1 * (mu0 - mu1) ** 2, -1.0)
    thresholds = jnp.arange(1, OTSU_BINS, dtype=jnp.float32) / OTSU_BINS
    return variance, thresholds


def otsu_threshold(values: jax.Array) -> jax.Array:
    """Otsu's threshold of values in [0, 1] (any shape, flattened), from a 256-bin histogram.

    The candidates are the bin edges k / 256; the one that maximises the between-class variance
    (the first on ties) is returned, so ``values >= t`` is the upper class. Class means use the
    values themselves, not bin centres. Values outside [0, 1] fall into the end bins.

    Args:
      values: float array of any shape with at least one element, in [0, 1].

    Returns:
      [] float32. When all values fall into one bin, the midpoint of their range (the value
      itself for a constant array).
    """
    if jnp.size(values) == 0:
        raise ValueError("values is empty: Otsu's threshold needs at least one value.")
    variance, thresholds = _otsu_parts(values)
    v = jnp.asarray(values, jnp.float32)
    midpoint = (jnp.min(v) + jnp.max(v)) / 2
    return jnp.where(jnp.max(variance) >= 0, thresholds[jnp.argmax(variance)], midpoint)


def _check_threshold(threshold: str | float) -> None:
    """Raises a ValueError unless ``threshold`` is "otsu" or a number in [0, 1]."""
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(
                f'threshold must be "otsu" or a float in [0, 1]; got the string {threshold!r}.'
            )
        return
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(
            f'threshold must be "otsu" or a float in [0, 1] (static under jit); got {threshold!r}.'
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"threshold {threshold} is outside [0, 1]: it applies to maps min-max scaled to "
            '[0, 1] per image. Use e.g. 0.5, or "otsu" for a per-image threshold.'
        )


def segment(maps: jax.Array, threshold: str | float = "otsu") -> jax.Array:
    """Foreground masks from attention maps.

    Each map is min-max scaled to [0, 1] per image, then thresholded (``>= t``). A flat map
    (see FLAT_RELATIVE_TOLERANCE) becomes all False.

    Args:
      maps: [B, H, W] float, e.g. upsampled to the input resolution.
      threshold: "otsu" (each image's own `otsu_threshold`) or a fixed float in [0, 1]
        (static under jit).

    Returns:
      [B, H, W] bool.
    """
    _check_threshold(threshold)
    _check_maps(maps, square=False)
    m = jnp.asarray(maps, jnp.float32)
    lo = jnp.min(m, axis=(1, 2), keepdims=True)
    hi = jnp.max(m, axis=(1, 2), keepdims=True)
    span = hi - lo
    scale = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    flat = span <= FLAT_RELATIVE_TOLERANCE * scale
    scaled = jnp.where(flat, 0.0, (m - lo) / jnp.where(flat, 1.0, span))
    if threshold == "otsu":
        t = jax.vmap(otsu_threshold)(scaled)[:, None, None]
    else:
        t = jnp.float32(threshold)
    return (scaled >= t) & ~flat


def jaccard(predicted: jax.Array, target: jax.Array) -> jax.Array:
    """Intersection over union of masks.

    Args:
      predicted: [B, H, W] bool, e.g. from `segment`.
      target: [B, H, W] bool, or float in [0, 1] (binarised at > 0.5).

    Returns:
      [B] float32 in [0, 1]; 1 when both masks are empty.
    """
    predicted_dtype = getattr(predicted, "dtype", None)
    if predicted_dtype != jnp.bool_:
        raise ValueError(
            f"predicted must be a boolean mask [B, H, W]; got dtype {predicted_dtype}. "
            "Threshold attention maps with segment() first."
        )
    _check_maps(predicted, "predicted", square=False)
    _check_rows(target, "target", predicted.shape[0], tuple(predicted.shape[1:]))
    target = jnp.asarray(target)
    if target.dtype != jnp.bool_:
        target = target > 0.5
    intersection = jnp.sum(predicted & target, axis=(1, 2)).astype(jnp.float32)
    union = jnp.sum(predicted | target, axis=(1, 2)).astype(jnp.float32)
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1.0), 1.0)


def attention_statistics_sums(
    maps: jax.Array, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Sums over the batch of per-map attention statistics (see `attention_statistics`).

    Args:
      maps: the raw normalised maps of one tap at its own resolution, [B, H, W].
      mask: optional [B] bool; only rows with True count (all rows when None).

    Returns:
      "entropy", "peak", "peak_to_mean", "near_zero_fraction", "uniform_fraction" and
      "count" (the number of rows counted) -> [] float32 sums over the counted rows.
    """
    _check_maps(maps, square=False)
    b, h, w = maps.shape
    weights = _row_weights(mask, b)
    m = jnp.reshape(jnp.asarray(maps, jnp.float32), (b, h * w))
    mass = jnp.clip(m, 0.0)
    total = jnp.sum(mass, axis=-1, keepdims=True)
    p = jnp.where(total > 0, mass / jnp.where(total > 0, total, 1.0), 1.0 / (h * w))
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    entropy = entropy / math.log(h * w) if h * w > 1 else jnp.zeros_like(entropy)
    peak = jnp.max(m, axis=-1)
    peak_to_mean = jnp.max(p, axis=-1) * (h * w)  # max / mean, 1 for an all-zero map
    per_map = {
        "entropy": entropy,
        "peak": peak,
        "peak_to_mean": peak_to_mean,
        "near_zero_fraction": (peak < NEAR_ZERO_PEAK).astype(jnp.float32),
        "uniform_fraction": (peak_to_mean < UNIFORM_PEAK_TO_MEAN).astype(jnp.float32),
    }
    sums = {name: jnp.sum(value * weights) for name, value in per_map.items()}
    sums["count"] = jnp.sum(weights)
    return sums


def attention_statistics(maps: jax.Array) -> dict[str, jax.Array]:
    """Batch means of attention statistics of one tap's maps.

    Per map, p = clip(map, 0) / sum (uniform when the sum is 0).

    Args:
      maps: the raw normalised maps of one tap at its own resolution, [B, H, W] (softmax maps
        sum to 1, sigmoid maps lie in (0, 1)).

    Returns:
      [] float32 batch means of:
        "entropy": -sum p log p / log(H*W); 1 for a uniform map, 0 for one location.
        "peak": max of the raw map.
        "peak_to_mean": max(map) / mean(map), computed on p; 1 for a uniform map.
        "near_zero_fraction": fraction of maps with raw max < NEAR_ZERO_PEAK.
        "uniform_fraction": fraction of maps with peak_to_mean < UNIFORM_PEAK_TO_MEAN.
    """
    sums = attention_statistics_sums(maps)
    count = sums.pop("count")
    return {name: value / count for name, value in sums.items()}


def _localization_row_scores(
    maps: jax.Array, region: jax.Array, target: jax.Array, threshold: str | float
) -> dict[str, jax.Array]:
    """Per-row "pointing", "mass" (in `region`) and "jaccard" (against `target`), [B] float32."""
    return {
        "pointing": pointing_game_in_mask(maps, region).astype(jnp.float32),
        "mass": attention_mass_in_mask(maps, region),
        "jaccard": jaccard(segment(maps, threshold), target),
    }


def localization_sums(
    maps: Mapping[str, jax.Array],
    boxes: jax.Array | None,
    mask: jax.Array,
    *,
    threshold: str | float = "otsu",
    segmentation: jax.Array | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """Sums over the masked rows of localization scores, per tap and combined.

    Jit-able with ``threshold`` static. Accumulate over batches (``jax.tree.map(jnp.add, ...)``)
    and divide with `finalize`.

    Args:
      maps: tap name -> map [B, S, S], upsampled to the input resolution.
      boxes: float [B, 4] as (ymin, xmin, ymax, xmax) in input pixels, max exclusive; or None
        for a dataset with masks only (an image folder with masks), where the pointing game
        and the mass are scored inside `segmentation` instead.
      mask: [B] bool; only rows with True count (False for padding).
      threshold: for `segment`: "otsu" or a float in [0, 1].
      segmentation: optional [B, S, S] foreground masks (float in [0, 1], binarised at > 0.5,
        or bool) that the segmented maps are scored against; the boxes' masks when None.
        Required when `boxes` is None.

    Returns:
      for each tap name, and for "combined" (the `combine_maps` of all taps, only with two taps
      or more) -> {"pointing": pointing game hits, "mass": attention mass in the box (in the
      mask without boxes), "jaccard": Jaccard index of the segmented map, "count": rows
      counted}, each a [] float32 sum.
    """
    _check_threshold(threshold)
    if not maps:
        raise ValueError("maps is empty: pass at least one tap's map {name: [B, S, S]}.")
    if COMBINED in maps:
        raise ValueError(
            f'a tap is named "{COMBINED}", the key reserved for the combined map; rename it.'
        )
    first_name, first = next(iter(maps.items()))
    _check_maps(first, f"maps[{first_name!r}]")
    b, s, _ = first.shape
    for name, m in maps.items():
        _check_rows(m, f"maps[{name!r}]", b, (s, s))
    if boxes is None and segmentation is None:
        raise ValueError(
            "boxes and segmentation are both None: pass boxes [B, 4], segmentation masks "
            "[B, S, S], or both."
        )
    weights = _row_weights(mask, b)
    if segmentation is not None:
        _check_rows(segmentation, "segmentation", b, (s, s))
    if boxes is None:
        region = target = _region(segmentation)
    else:
        _check_rows(boxes, "boxes", b, (4,))
        region = box_mask(boxes, s)
        target = region if segmentation is None else segmentation
    scored = dict(maps)
    if len(maps) >= 2:
        scored[COMBINED] = combine_maps(maps)
    sums = {}
    for name, m in scored.items():
        rows = _localization_row_scores(m, region, target, threshold)
        sums[name] = {key: jnp.sum(value * weights) for key, value in rows.items()}
        sums[name]["count"] = jnp.sum(weights)
    return sums


def finalize(sums: Mapping[str, Mapping[str, jax.Array]]) -> dict[str, dict[str, float]]:
    """Means from accumulated `localization_sums`.

    Args:
      sums: name -> {score: [] sum, ..., "count": [] rows counted}.

    Returns:
      name -> {score: sum / count as a python float, ..., "count": the count as a float}.
    """
    means = {}
    for name, scores in sums.items():
        if "count" not in scores:
            raise ValueError(
                f"sums[{name!r}] has no 'count'; pass the output of localization_sums "
                f"(accumulated over batches), got keys {sorted(scores)}."
            )
        count = float(scores["count"])
        if count <= 0:
            raise ValueError(
                f"sums[{name!r}] counted no rows (count {count}): every row was masked out. "
                "Check that the mask marks the real (non-padding) rows True."
            )
        means[name] = {k: float(v) / count for k, v in scores.items() if k != "count"}
        means[name]["count"] = count
    return means
