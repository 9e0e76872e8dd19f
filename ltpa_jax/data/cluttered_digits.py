"""Cluttered digits: an offline attention benchmark made from scikit-learn's handwritten digits.

Each example is a black `image_size` x `image_size` canvas holding one target digit (an 8x8
scikit-learn digit enlarged with bilinear interpolation to 20-28 px, at a random position) and a
few distractor fragments: 6-10 px crops cut around the ink of *other* digits, enlarged the same
way, placed at random outside the target and sometimes dimmer. Canvases smaller than 64 px scale
these sizes by image_size / 64. The label is the target's class; the fragments are too small to
read as digits, so the task stays unambiguous, but a classifier has to find the target among
them, which is what attention is for. A little Gaussian noise is added on top.

Everything is plain NumPy and deterministic by seed. The train and test splits draw their target
and fragment digits from disjoint subsets of the 1797 source images (a fixed 80/20 partition that
does not depend on the seed), so test images never reuse a training digit.

A third split, "test_shifted", is a test set outside the training distribution: the test
split's source digits, but target digits smaller (14-18 px) or larger (30-36 px) than any in
training (20-28 px on a 64 px canvas; scaled likewise on smaller ones) and more clutter (9-16
fragments on a 64x64 canvas against 4-8). It is the test split of the registry's
"cluttered_digits_shifted": a model trained on cluttered_digits and evaluated there shows
whether its attention generalises.

Example:
    >>> data = make_split("train", num_examples=1000, image_size=64, seed=0)
    >>> data["image"].shape, data["label"].shape, data["box"].shape
    ((1000, 64, 64, 3), (1000,), (1000, 4))
"""

import functools

import numpy as np
from sklearn.datasets import load_digits

NUM_CLASSES = 10
SHIFTED_SPLIT = "test_shifted"
SPLITS = ("train", "test", SHIFTED_SPLIT)

SOURCE_SIZE = 8  # Side of a scikit-learn digit, in pixels.
# Sizes on canvases of 64 px or more; smaller canvases scale them by image_size / 64.
MIN_DIGIT_SIZE = 20  # Smallest side of the enlarged target digit, in pixels.
MAX_DIGIT_SIZE = 28  # Largest side of the enlarged target digit, in pixels.
MIN_IMAGE_SIZE = 32  # Smallest canvas (digits 10-14 px there).
MIN_FRAGMENT_SIZE = 6  # Smallest side of a distractor fragment, in pixels.
MAX_FRAGMENT_SIZE = 10  # Largest side of a distractor fragment, in pixels.
FRAGMENTS_PER_64X64 = 8  # Most fragments on a 64x64 canvas; scales with the canvas area.
TEST_FRACTION = 0.2  # Fraction of the source digits reserved for the test split.
INK_THRESHOLD = 0.25  # Source pixels above this (in [0, 1]) count as ink.
NOISE_STD = 0.02  # Standard deviation of the additive Gaussian noise, in [0, 1] units.
# The shifted test split: target sides outside [MIN_DIGIT_SIZE, MAX_DIGIT_SIZE] (half of the
# images each), and fragments from just above the training's most up to this many times it.
SHIFTED_SMALL_DIGIT_SIZES = (14, 18)
SHIFTED_LARGE_DIGIT_SIZES = (30, 36)
SHIFTED_CLUTTER_FACTOR = 2

_SOURCE_PARTITION_SEED = 20180430  # Fixed: the train/test partition never depends on `seed`.
_TARGET_MARGIN = 2  # Fragments keep this many pixels away from the target's square.
_PLACEMENT_TRIES = 10  # Re-draws of a fragment position that overlaps the target.
_CHUNK = 1024  # Examples rendered at once (bounds the memory of the [N, S, S] temporaries).


@functools.cache
def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's digits (bundled, no download).

    Returns:
        images: float32 `[1797, 8, 8]` in [0, 1]; labels: int32 `[1797]`.
    """
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    labels = digits.target.astype(np.int32)
    labels.setflags(write=False)
    return images, labels


def source_indices(split: str) -> np.ndarray:
    """Indices into scikit-learn's 1797 digits that a split draws its digits from.

    The partition is fixed (seeded by a constant), so train and test are disjoint whatever
    seed `make_split` is given.

    Args:
        split: "train" or "test".

    Returns:
        int64 `[M]` sorted indices; about 80% of the digits for "train", 20% for "test".
    """
    _check_split(split)
    num_digits = len(_source_digits()[1])
    order = np.random.default_rng(_SOURCE_PARTITION_SEED).permutation(num_digits)
    num_test = int(round(num_digits * TEST_FRACTION))
    chosen = order[num_test:] if split == "train" else order[:num_test]  # Both test splits.
    return np.sort(chosen)


def sizes(image_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(min, max) side of target digits and of fragments on a canvas of `image_size` px."""
    scale = min(1.0, image_size / 64)
    digit = (round(MIN_DIGIT_SIZE * scale), round(MAX_DIGIT_SIZE * scale))
    fragment = (max(2, round(MIN_FRAGMENT_SIZE * scale)), round(MAX_FRAGMENT_SIZE * scale))
    return digit, fragment


def num_fragments(image_size: int) -> int:
    """Largest number of distractor fragments on a canvas (each example has half to all)."""
    return max(2, int(round(FRAGMENTS_PER_64X64 * (image_size / 64) ** 2)))


def shifted_sizes(image_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(min, max) side of the small and of the large targets of the shifted test split."""
    scale = min(1.0, image_size / 64)
    small, large = SHIFTED_SMALL_DIGIT_SIZES, SHIFTED_LARGE_DIGIT_SIZES
    return (
        (round(small[0] * scale), round(small[1] * scale)),
        (round(large[0] * scale), round(large[1] * scale)),
    )


def make_split(
    split: str, num_examples: int, image_size: int, seed: int, *, clutter: bool = True
) -> dict[str, np.ndarray]:
    """Generates `num_examples` cluttered-digit images of one split.

    Args:
        split: "train", "test" (disjoint source digits) or "test_shifted" (the test digits,
            sizes and clutter outside the training range, see the module).
        num_examples: Number of images N to generate (>= 0).
        image_size: Canvas side S in pixels (>= `MIN_IMAGE_SIZE`).
        seed: Seeds every random choice; the same arguments give the same arrays.
        clutter: If False, leave out the fragments and the noise (same targets, same positions:
            the random draws do not depend on this flag). For tests and ablations.

    Returns:
        A dict with
          - "image": uint8 `[N, S, S, 3]`, grayscale replicated to 3 channels;
          - "label": int32 `[N]`, the target digit's class in [0, 10);
          - "box": float32 `[N, 4]`, the target's ink box `(ymin, xmin, ymax, xmax)` in pixels,
            max exclusive;
          - "source_index": int32 `[N]`, the target's index in scikit-learn's digits.

    Raises:
        ValueError: For an unknown split, a negative count or a canvas too small for the digit.
    """
    _check_split(split)
    if num_examples < 0:
        raise ValueError(f"num_examples={num_examples} must be >= 0.")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size={image_size} is too small for cluttered digits: the target digit "
            f"needs room around it. Use image_size >= {MIN_IMAGE_SIZE} (a multiple of 32 for "
            "the models; 32 and 64 are the usual choices)."
        )
    images, labels = _source_digits()
    pool = source_indices(split)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n, s = num_examples, image_size
    digit_sizes, fragment_sizes = sizes(s)

    # Target: which digit, how large, where.
    target_pos = rng.integers(0, len(pool), n)
    target_src = pool[target_pos]
    if split == SHIFTED_SPLIT:
        small, large = shifted_sizes(s)
        size = np.where(
            rng.random(n) < 0.5,
            rng.integers(small[0], small[1] + 1, n),
            rng.integers(large[0], large[1] + 1, n),
        )
    else:
        size = rng.integers(digit_sizes[0], digit_sizes[1] + 1, n)
    top = rng.integers(0, s - size + 1)
    left = rng.integers(0, s - size + 1)
    target_gain = rng.uniform(0.9, 1.0, n).astype(np.float32)

    # Fragments: [N, K] draws, always made so that `clutter` does not change the targets.
    k = num_fragments(s)
    if split == SHIFTED_SPLIT:
        low, k = k + 1, SHIFTED_CLUTTER_FACTOR * k
    else:
        low = k // 2
    active = np.arange(k)[None, :] < rng.integers(low, k + 1, n)[:, None]
    frag_src = pool[(target_pos[:, None] + rng.integers(1, len(pool), (n, k))) % len(pool)]
    frag_digit = rng.integers(digit_sizes[0], digit_sizes[1] + 1, (n, k))
    frag = rng.integers(fragment_sizes[0], fragment_sizes[1] + 1, (n, k))
    crop_y, crop_x = _crops_around_ink(images[frag_src], frag_digit, frag, rng)
    frag_y, frag_x, clear = _place_outside(top, left, size, frag, s, rng)
    active &= clear
    frag_gain = (rng.uniform(0.6, 1.0, (n, k)) * active).astype(np.float32)
    noise_seed = int(rng.integers(0, 2**63 - 1))

    canvas = np.empty((n, s, s), np.uint8)
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, n))
        zeros = np.zeros_like(size[sl])
        out = target_gain[sl, None, None] * _render(
            images[target_src[sl]], top[sl], left[sl], zeros, zeros, size[sl], size[sl], s
        )
        if clutter:
            for j in range(k):
                piece = _render(
                    images[frag_src[sl, j]],
                    frag_y[sl, j],
                    frag_x[sl, j],
                    crop_y[sl, j],
                    crop_x[sl, j],
                    frag[sl, j],
                    frag_digit[sl, j],
                    s,
                )
                out = np.maximum(out, frag_gain[sl, j, None, None] * piece)
            noise_rng = np.random.default_rng([noise_seed, lo])
            out += NOISE_STD * noise_rng.standard_normal(out.shape, dtype=np.float32)
        canvas[sl] = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)

    return {
        "image": np.repeat(canvas[..., None], 3, axis=-1),
        "label": labels[target_src].astype(np.int32),
        "box": _ink_boxes(images[target_src], top, left, size),
        "source_index": target_src.astype(np.int32),
    }


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a cluttered-digits split; use one of {SPLITS}.")


def _interp_matrix(
    start: np.ndarray, offset: np.ndarray, length: np.ndarray, size: np.ndarray, canvas: int
) -> np.ndarray:
    """Bilinear weights that paste a window of an enlarged digit along one canvas axis.

    The 8-px source axis is enlarged to `size` px (half-pixel centres, edge clamped); the
    window `[offset, offset + length)` of it lands on canvas pixels `[start, start + length)`.

    Args:
        start, offset, length, size: int `[M]`.
        canvas: Side of the canvas S.

    Returns:
        float32 `[M, S, 8]`; row y holds the source weights of canvas pixel y (zero outside).
    """
    rel = np.arange(canvas)[None, :] - start[:, None]  # [M, S]
    inside = (rel >= 0) & (rel < length[:, None])
    u = (rel + offset[:, None] + 0.5) * (SOURCE_SIZE / size[:, None]) - 0.5
    u = np.clip(u, 0.0, SOURCE_SIZE - 1.0).astype(np.float32)
    weights = np.maximum(0.0, 1.0 - np.abs(u[..., None] - np.arange(SOURCE_SIZE)))
    return (weights * inside[..., None]).astype(np.float32)


def _render(
    digits: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    crop_y: np.ndarray,
    crop_x: np.ndarray,
    length: np.ndarray,
    size: np.ndarray,
    canvas: int,
) -> np.ndarray:
    """Renders a `length`-px square window of each digit enlarged to `size` px onto a canvas.

    Args:
        digits: float32 `[M, 8, 8]` in [0, 1].
        y, x: int `[M]`, canvas position of the window's top-left corner.
        crop_y, crop_x: int `[M]`, the window's top-left corner in the enlarged digit.
        length: int `[M]`, window side; size: int `[M]`, enlarged digit side.
        canvas: Canvas side S.

    Returns:
        float32 `[M, S, S]` in [0, 1], zero outside the window.
    """
    rows = _interp_matrix(y, crop_y, length, size, canvas)  # [M, S, 8]
    cols = _interp_matrix(x, crop_x, length, size, canvas)  # [M, S, 8]
    return rows @ digits @ cols.transpose(0, 2, 1)


def _crops_around_ink(
    digits: np.ndarray, digit_size: np.ndarray, frag: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Chooses fragment windows centred on a random ink pixel of each (enlarged) digit.

    Args:
        digits: float32 `[N, K, 8, 8]`; digit_size, frag: int `[N, K]`.
        rng: Random generator.

    Returns:
        crop_y, crop_x: int `[N, K]` top-left corners in the enlarged digit, within bounds.
    """
    ink = digits.reshape(*digits.shape[:2], -1) > INK_THRESHOLD  # [N, K, 64]
    pick = np.argmax(rng.random(ink.shape) * ink, axis=-1)  # A random ink pixel.
    scale = digit_size / SOURCE_SIZE
    centre_y = (pick // SOURCE_SIZE + 0.5) * scale
    centre_x = (pick % SOURCE_SIZE + 0.5) * scale
    high = digit_size - frag
    crop_y = np.clip(np.rint(centre_y - frag / 2), 0, high).astype(np.int64)
    crop_x = np.clip(np.rint(centre_x - frag / 2), 0, high).astype(np.int64)
    return crop_y, crop_x


def _place_outside(
    top: np.ndarray,
    left: np.ndarray,
    size: np.ndarray,
    frag: np.ndarray,
    canvas: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws fragment positions that keep clear of the target's square (plus a margin).

    Args:
        top, left, size: int `[N]`, the target's square; frag: int `[N, K]` fragment sides.
        canvas: Canvas side S.
        rng: Random generator.

    Returns:
        y, x: int `[N, K]` top-left corners; clear: bool `[N, K]`, False where every try
        overlapped (those fragments are dropped).
    """
    high = canvas - frag + 1
    y = rng.integers(0, high)
    x = rng.integers(0, high)
    lo_y, lo_x = (top - _TARGET_MARGIN)[:, None], (left - _TARGET_MARGIN)[:, None]
    hi_y = (top + size + _TARGET_MARGIN)[:, None]
    hi_x = (left + size + _TARGET_MARGIN)[:, None]

    def overlaps(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (y < hi_y) & (y + frag > lo_y) & (x < hi_x) & (x + frag > lo_x)

    for _ in range(_PLACEMENT_TRIES):
        bad = overlaps(y, x)
        y = np.where(bad, rng.integers(0, high), y)
        x = np.where(bad, rng.integers(0, high), x)
    return y, x, ~overlaps(y, x)


def _ink_boxes(
    digits: np.ndarray, top: np.ndarray, left: np.ndarray, size: np.ndarray
) -> np.ndarray:
    """Boxes of the enlarged source pixels that hold ink.

    Args:
        digits: float32 `[N, 8, 8]`; top, left, size: int `[N]`.

    Returns:
        float32 `[N, 4]` `(ymin, xmin, ymax, xmax)` in canvas pixels, max exclusive.
    """
    ink = digits > INK_THRESHOLD
    rows, cols = ink.any(axis=2), ink.any(axis=1)  # [N, 8] each
    first_row, last_row = _first_last(rows)
    first_col, last_col = _first_last(cols)
    scale = size / SOURCE_SIZE
    box = np.stack(
        [
            top + first_row * scale,
            left + first_col * scale,
            top + (last_row + 1) * scale,
            left + (last_col + 1) * scale,
        ],
        axis=-1,
    )
    return box.astype(np.float32)


def _first_last(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last True index along the last axis of a bool `[N, L]` (0, L-1 if none)."""
    length = mask.shape[-1]
    any_ink = mask.any(axis=-1)
    first = np.where(any_ink, np.argmax(mask, axis=-1), 0)
    last = np.where(any_ink, length - 1 - np.argmax(mask[:, ::-1], axis=-1), length - 1)
    return first, last
