"""Tests for ltpa_jax.localization: localization and segmentation scores, attention statistics.

Small hand-made arrays with hand-computed expected values; Otsu against a NumPy brute force.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltpa_jax import localization

S = 16
BOX = np.array([[4.0, 4.0, 8.0, 12.0]], np.float32)  # 4 rows x 8 columns: 32 / 256 = 0.125


def _one_hot(y: int, x: int, size: int = S) -> np.ndarray:
    m = np.zeros((1, size, size), np.float32)
    m[0, y, x] = 1.0
    return m


def _otsu_brute_force(values: np.ndarray) -> float:
    """Candidate k / 256 that maximises w0 * w1 * (mu0 - mu1)^2 over the raw values."""
    v = values.ravel().astype(np.float64)
    best, best_t = -1.0, None
    for k in range(1, 256):
        t = k / 256
        lower, upper = v[v < t], v[v >= t]
        if lower.size and upper.size:
            variance = lower.size * upper.size * (lower.mean() - upper.mean()) ** 2
            if variance > best:
                best, best_t = variance, t
    return best_t


def test_box_mask_uses_pixel_centres():
    mask = localization.box_mask(np.array([[0.5, 1.0, 3.0, 2.6]]), 4)
    expected = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(mask[0], expected)
    assert mask.dtype == jnp.bool_


def test_map_concentrated_in_box_scores_pointing_and_mass_one():
    m = np.asarray(localization.box_mask(BOX, S), np.float32)
    assert bool(localization.pointing_game(m, BOX)[0])
    np.testing.assert_allclose(localization.attention_mass_in_box(m, BOX), [1.0])


def test_uniform_map_mass_is_box_area_fraction():
    np.testing.assert_allclose(
        localization.attention_mass_in_box(np.ones((1, S, S)), BOX), [0.125], rtol=1e-6
    )


def test_map_peaked_outside_box_misses():
    m = _one_hot(0, 0)
    assert not bool(localization.pointing_game(m, BOX)[0])
    np.testing.assert_allclose(localization.attention_mass_in_box(m, BOX), [0.0])


def test_mass_clips_negatives_and_all_zero_map_scores_zero():
    m = -np.ones((2, S, S), np.float32)
    m[0, 5, 5] = 2.0  # inside the box; the negatives elsewhere do not count
    m[1] = 0.0
    mass = localization.attention_mass_in_box(m, np.repeat(BOX, 2, axis=0))
    np.testing.assert_allclose(mass, [1.0, 0.0])


def test_jaccard_of_literal_masks_and_both_empty():
    predicted = np.array([[[1, 1, 1, 1], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], bool)
    target = np.array([[[0, 0, 1, 1], [1, 1, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    # Row 0: 2 of 4 overlap -> 2 / 6; row 1: both empty -> 1.
    np.testing.assert_allclose(localization.jaccard(predicted, target), [1 / 3, 1.0], rtol=1e-6)


def test_segment_with_fixed_threshold_and_flat_map():
    maps = np.array([[[0.0, 1.0], [2.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]], np.float32)
    expected = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 0]]], bool)  # scaled 0, .25, .5, 1
    np.testing.assert_array_equal(localization.segment(maps, 0.5), expected)


def test_segment_with_otsu_splits_two_levels():
    maps = np.full((1, 4, 4), 0.1, np.float32)
    maps[0, :2, :] = 0.9
    np.testing.assert_array_equal(jax.jit(localization.segment)(maps)[0], maps[0] > 0.5)


def test_otsu_threshold_lies_between_two_clusters():
    values = np.array([0.10, 0.12, 0.15, 0.20, 0.80, 0.85, 0.88, 0.90], np.float32)
    t = float(jax.jit(localization.otsu_threshold)(values))
    assert 0.20 < t <= 0.80


def test_otsu_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.08, 300), rng.normal(0.7, 0.12, 200)])
    values = np.clip(values, 0.0, 1.0).astype(np.float32).reshape(20, 25)
    t = float(jax.jit(localization.otsu_threshold)(values))
    assert t == pytest.approx(_otsu_brute_force(values))


def test_otsu_threshold_of_constant_array_is_the_value():
    t = jax.jit(localization.otsu_threshold)(np.full((3, 3), 0.3, np.float32))
    assert float(t) == pytest.approx(0.3)


def test_combine_maps_weighs_taps_equally():
    sigmoid = np.full((1, 4, 4), 0.5, np.float32)  # sums to 8
    softmax = _one_hot(0, 0, size=4)  # sums to 1
    combined = np.asarray(localization.combine_maps({"att1": sigmoid, "att2": softmax}))
    expected = np.full((1, 4, 4), 1 / 32, np.float32)
    expected[0, 0, 0] = (1 / 16 + 1) / 2
    np.testing.assert_allclose(combined, expected, rtol=1e-6)


def test_combine_maps_keeps_zero_maps_zero():
    combined = localization.combine_maps({"a": np.zeros((1, 4, 4)), "b": _one_hot(1, 2, size=4)})
    np.testing.assert_allclose(combined, _one_hot(1, 2, size=4) / 2)


def test_attention_statistics_of_uniform_softmax_map():
    stats = localization.attention_statistics(np.full((2, 32, 32), 1 / 1024, np.float32))
    assert float(stats["entropy"]) == pytest.approx(1.0, abs=1e-5)
    assert float(stats["peak_to_mean"]) == pytest.approx(1.0, abs=1e-5)
    assert float(stats["peak"]) == pytest.approx(1 / 1024)
    assert float(stats["near_zero_fraction"]) == 1.0
    assert float(stats["uniform_fraction"]) == 1.0


def test_attention_statistics_of_one_hot_map():
    stats = localization.attention_statistics(_one_hot(3, 7, size=32))
    assert float(stats["entropy"]) == pytest.approx(0.0, abs=1e-6)
    assert float(stats["peak"]) == 1.0
    assert float(stats["peak_to_mean"]) == pytest.approx(1024.0)
    assert float(stats["near_zero_fraction"]) == 0.0
    assert float(stats["uniform_fraction"]) == 0.0


def test_attention_statistics_sums_mask_excludes_rows():
    maps = np.concatenate([np.full((1, 8, 8), 1 / 64, np.float32), _one_hot(0, 0, size=8)])
    sums = localization.attention_statistics_sums(maps, mask=np.array([True, False]))
    assert float(sums["count"]) == 1.0
    assert float(sums["entropy"]) == pytest.approx(1.0, abs=1e-5)
    assert float(sums["uniform_fraction"]) == 1.0
    assert float(localization.attention_statistics_sums(maps)["count"]) == 2.0


def _localization_batch():
    """Three rows: att1 hits row 0 and misses row 1; row 2 is padding."""
    inside = np.asarray(localization.box_mask(BOX, S), np.float32)
    att1 = np.concatenate([inside, _one_hot(0, 0), np.zeros((1, S, S), np.float32)])
    att2 = np.concatenate([inside, inside, _one_hot(0, 0)])
    boxes = np.repeat(BOX, 3, axis=0)
    return {"att1": att1, "att2": att2}, boxes, np.array([True, True, False])


# Combined row 1 is (one_hot(0, 0) + box / 32) / 2: half its mass in the box, its peak at (0, 0)
# misses, and the box pixels scale to 1/32 < 0.5, so the segment misses the box.
EXPECTED = {
    "att1": {"pointing": 0.5, "mass": 0.5, "jaccard": 0.5, "count": 2.0},
    "att2": {"pointing": 1.0, "mass": 1.0, "jaccard": 1.0, "count": 2.0},
    "combined": {"pointing": 0.5, "mass": 0.75, "jaccard": 0.5, "count": 2.0},
}


def test_localization_sums_with_mask_and_combined():
    maps, boxes, mask = _localization_batch()
    result = localization.finalize(localization.localization_sums(maps, boxes, mask, threshold=0.5))
    assert set(result) == set(EXPECTED)
    for name, scores in EXPECTED.items():
        assert result[name] == pytest.approx(scores), name


def test_localization_sums_against_segmentation_and_single_tap():
    maps, boxes, mask = _localization_batch()
    segmentation = np.ones((3, S, S), np.float32)
    sums = localization.localization_sums(
        {"att2": maps["att2"]}, boxes, mask, threshold=0.5, segmentation=segmentation
    )
    assert set(sums) == {"att2"}
    assert localization.finalize(sums)["att2"]["jaccard"] == pytest.approx(0.125)


def test_localization_sums_under_jit_with_otsu():
    maps, boxes, mask = _localization_batch()
    step = jax.jit(localization.localization_sums, static_argnames="threshold")
    result = localization.finalize(step(maps, boxes, mask, threshold="otsu"))
    assert set(result) == set(EXPECTED)
    # The taps' maps take two levels, so Otsu segments them as the fixed threshold does.
    assert result["att1"] == pytest.approx(EXPECTED["att1"])
    assert result["att2"] == pytest.approx(EXPECTED["att2"])
    for score in ("pointing", "mass", "count"):
        assert result["combined"][score] == pytest.approx(EXPECTED["combined"][score])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: localization.segment(np.ones((1, 4, 4)), "mean"), '"otsu" or a float'),
        (lambda: localization.segment(np.ones((1, 4, 4)), 1.5), r"outside \[0, 1\]"),
        (lambda: localization.segment(np.ones((4, 4)), 0.5), "For a single map use"),
        (lambda: localization.combine_maps({}), "at least one tap"),
        (
            lambda: localization.combine_maps({"a": np.ones((1, 4, 4)), "b": np.ones((1, 8, 8))}),
            "same shape",
        ),
        (lambda: localization.jaccard(np.ones((1, 2, 2)), np.ones((1, 2, 2))), "segment"),
        (lambda: localization.pointing_game(np.ones((1, S, S)), np.ones((2, 4))), "boxes must"),
        (lambda: localization.pointing_game(np.ones((1, 4, 8)), BOX), "Upsample"),
        (
            lambda: localization.localization_sums(
                {"a": np.ones((1, S, S))}, BOX, np.ones(2, bool)
            ),
            "mask must",
        ),
        (lambda: localization.finalize({"a": {"mass": 0.0, "count": 0.0}}), "masked out"),
    ],
)
def test_bad_inputs_raise_helpful_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
