"""Tests of the cluttered-digits generator (pure NumPy, fast)."""

import time

import numpy as np
import pytest

from ltpa_jax.data import cluttered_digits

SIZE = 64


@pytest.fixture(scope="module")
def train() -> dict[str, np.ndarray]:
    return cluttered_digits.make_split("train", 300, SIZE, seed=0)


def _box_mask(box: np.ndarray, size: int) -> np.ndarray:
    """bool `[S, S]`, True inside `(ymin, xmin, ymax, xmax)` (max exclusive)."""
    centres = np.arange(size) + 0.5
    rows = (centres >= box[0]) & (centres < box[2])
    cols = (centres >= box[1]) & (centres < box[3])
    return rows[:, None] & cols[None, :]


def test_shapes_dtypes_and_ranges(train):
    assert train["image"].shape == (300, SIZE, SIZE, 3)
    assert train["image"].dtype == np.uint8
    assert train["label"].shape == (300,)
    assert train["label"].dtype == np.int32
    assert train["box"].shape == (300, 4)
    assert train["box"].dtype == np.float32
    assert train["label"].min() >= 0
    assert train["label"].max() < cluttered_digits.NUM_CLASSES
    box = train["box"]
    assert np.all(box >= 0) and np.all(box[:, 2:] <= SIZE)
    assert np.all(box[:, 2] > box[:, 0]) and np.all(box[:, 3] > box[:, 1])
    assert train["image"].max() > 200  # Bright ink ...
    assert np.median(train["image"]) < 20  # ... on a dark canvas.


def test_grayscale_replicated_to_three_channels(train):
    image = train["image"]
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_labels_cover_all_classes(train):
    assert set(np.unique(train["label"])) == set(range(cluttered_digits.NUM_CLASSES))


def test_same_seed_same_arrays_other_seed_differs(train):
    again = cluttered_digits.make_split("train", 300, SIZE, seed=0)
    other = cluttered_digits.make_split("train", 300, SIZE, seed=1)
    for key in train:
        np.testing.assert_array_equal(train[key], again[key])
    assert not np.array_equal(train["image"], other["image"])
    assert not np.array_equal(train["label"], other["label"])


def test_train_and_test_use_disjoint_source_digits(train):
    train_pool = cluttered_digits.source_indices("train")
    test_pool = cluttered_digits.source_indices("test")
    assert len(np.intersect1d(train_pool, test_pool)) == 0
    assert len(train_pool) + len(test_pool) == 1797
    assert 0.15 < len(test_pool) / 1797 < 0.25
    # Whatever the seed, each split draws its targets from its own pool.
    test = cluttered_digits.make_split("test", 300, SIZE, seed=0)
    assert np.isin(train["source_index"], train_pool).all()
    assert np.isin(test["source_index"], test_pool).all()


def test_box_holds_most_of_the_target_ink():
    clean = cluttered_digits.make_split("train", 100, SIZE, seed=3, clutter=False)
    for image, box in zip(clean["image"][..., 0].astype(np.float64), clean["box"], strict=True):
        inside = _box_mask(box, SIZE)
        assert image[inside].sum() >= 0.85 * image.sum()
        assert image[inside].max() > 200


def test_clutter_stays_outside_the_target(train):
    clean = cluttered_digits.make_split("train", 300, SIZE, seed=0, clutter=False)
    np.testing.assert_array_equal(clean["label"], train["label"])
    np.testing.assert_array_equal(clean["box"], train["box"])
    noisy = train["image"][..., 0].astype(np.float64)
    plain = clean["image"][..., 0].astype(np.float64)
    for i in range(len(plain)):
        inside = _box_mask(train["box"][i], SIZE)
        # Inside the box only the noise differs (a few grey levels), never a fragment.
        assert np.abs(noisy[i][inside] - plain[i][inside]).max() < 40
    # Outside the target there is clutter: bright fragment pixels in most images.
    outside_ink = [
        (noisy[i][~_box_mask(train["box"][i], SIZE)] > 128).sum() for i in range(len(plain))
    ]
    assert np.mean(np.array(outside_ink) > 0) > 0.9


def test_fragments_are_at_most_half_a_digit():
    # Fragments are at most MAX_FRAGMENT_SIZE pixels wide, targets at least MIN_DIGIT_SIZE.
    assert cluttered_digits.MAX_FRAGMENT_SIZE <= cluttered_digits.MIN_DIGIT_SIZE // 2
    assert cluttered_digits.num_fragments(SIZE) >= 4


def test_image_size_too_small_raises_clear_error():
    with pytest.raises(ValueError, match=r"image_size=24 is too small.*image_size >= 32"):
        cluttered_digits.make_split("train", 4, 24, seed=0)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="split='validation'"):
        cluttered_digits.make_split("validation", 4, SIZE, seed=0)


def test_smallest_canvas_works():
    data = cluttered_digits.make_split("test", 20, cluttered_digits.MIN_IMAGE_SIZE, seed=0)
    assert data["image"].shape == (20, 32, 32, 3)
    assert np.all(data["box"][:, 2:] <= 32)


def test_generation_is_fast_enough():
    start = time.perf_counter()
    cluttered_digits.make_split("train", 2000, SIZE, seed=0)
    assert time.perf_counter() - start < 5.0  # ~0.6 s on 2 slow cores; 10,000 take ~3 s.


@pytest.mark.parametrize("size", [32, 64])
def test_shifted_split_has_sizes_and_clutter_outside_the_training_range(size):
    plain = cluttered_digits.make_split("test", 300, size, seed=0, clutter=False)
    test = cluttered_digits.make_split("test", 300, size, seed=0)
    shifted_plain = cluttered_digits.make_split("test_shifted", 300, size, seed=0, clutter=False)
    shifted = cluttered_digits.make_split("test_shifted", 300, size, seed=0)
    # The test split's source digits, the same classes.
    test_sources = set(cluttered_digits.source_indices("test"))
    assert set(shifted["source_index"]) <= test_sources
    assert set(shifted["label"]) == set(range(10))
    # Target sides outside the training range: about half smaller, half larger (ink boxes).
    (low, high), _ = cluttered_digits.sizes(size)
    small, large = cluttered_digits.shifted_sizes(size)
    assert small[1] < low and large[0] > high
    side = shifted["box"][:, 2] - shifted["box"][:, 0]
    test_side = test["box"][:, 2] - test["box"][:, 0]
    assert test_side.min() >= low * 0.6 and test_side.max() <= high
    assert (side < low * 0.999).mean() > 0.3 and (side > high).mean() > 0.3

    # Denser clutter: more ink outside the target's box than the test split has.
    def clutter(split, split_plain):
        extra = split["image"][..., 0].astype(int) - split_plain["image"][..., 0].astype(int)
        return (extra > 64).mean()

    assert clutter(shifted, shifted_plain) > 1.3 * clutter(test, plain)
    # The train and test splits are not changed by the third one.
    again = cluttered_digits.make_split("test", 300, size, seed=0)
    np.testing.assert_array_equal(again["image"], test["image"])
