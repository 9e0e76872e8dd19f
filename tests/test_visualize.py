"""Tests for ltpa_jax.visualize: overlays and attention grids (spec section 8)."""

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from PIL import Image

from ltpa_jax import visualize

H, W = 8, 12
CLASS_NAMES = ["cat", "dog", "ship"]


def _batch(b: int, taps: int, seed: int = 0):
    """Random images [b, H, W, 3], softmax-like maps {attK: [b, H, W]}, labels, predictions."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(b, H, W, 3)).astype(np.float32)
    maps = {}
    for k in range(1, taps + 1):
        logits = rng.normal(size=(b, H * W))
        m = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        maps[f"att{k}"] = m.reshape(b, H, W).astype(np.float32)
    labels = np.arange(b) % 3
    predictions = np.where(np.arange(b) % 2 == 0, labels, (labels + 1) % 3)
    return images, maps, labels, predictions


def _figure_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def test_overlay_shape_dtype_and_range():
    images, maps, _, _ = _batch(1, 1)
    out = visualize.overlay(images[0], maps["att1"][0] * 1000.0 - 3.0)
    assert out.shape == (H, W, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_overlay_blends_0_6_image_and_0_4_jet_map():
    images, maps, _, _ = _batch(1, 1)
    m = maps["att1"][0]
    scaled = (m - m.min()) / (m.max() - m.min())
    expected = 0.6 * images[0] + 0.4 * matplotlib.colormaps["jet"](scaled)[..., :3]
    np.testing.assert_allclose(visualize.overlay(images[0], m), expected, atol=1e-5)


@pytest.mark.parametrize("value", [0.0, 1.0 / (H * W), 5.0])
def test_overlay_of_constant_map_has_no_nan_and_is_the_zero_colour(value):
    image = np.full((H, W, 3), 0.5, np.float32)
    out = visualize.overlay(image, np.full((H, W), value))
    assert np.isfinite(out).all()
    zero_colour = np.asarray(matplotlib.colormaps["jet"](0.0)[:3])
    np.testing.assert_allclose(out, 0.6 * 0.5 + 0.4 * np.broadcast_to(zero_colour, out.shape), 1e-6)


def test_map_peaked_at_one_pixel_makes_that_pixel_the_reddest():
    image = np.full((H, W, 3), 0.5, np.float32)
    m = np.zeros((H, W))
    m[3, 7] = 1.0
    out = visualize.overlay(image, m)
    redness = out[..., 0] - out[..., 2]
    assert np.unravel_index(np.argmax(redness), redness.shape) == (3, 7)
    assert (redness[3, 7] > np.delete(redness.ravel(), 3 * W + 7)).all()


def test_normalize_map_scales_to_unit_range_and_flat_to_zeros():
    scaled = visualize.normalize_map(np.array([[2.0, 4.0], [3.0, 6.0]]))
    np.testing.assert_allclose(scaled, [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(visualize.normalize_map(np.full((2, 2), 7.0)), 0.0)


@pytest.mark.parametrize(
    "image_shape,map_shape",
    [((H, W, 3), (W, H)), ((H, W, 3), (H, W, 1)), ((H, W), (H, W)), ((H, W, 4), (H, W))],
)
def test_overlay_rejects_mismatched_shapes(image_shape, map_shape):
    with pytest.raises(ValueError, match=r"\[H, W"):
        visualize.overlay(np.zeros(image_shape), np.zeros(map_shape))


@pytest.mark.parametrize("taps", [0, 1, 2, 3])
def test_save_writes_png_with_one_row_per_image_and_one_column_per_tap(tmp_path, taps):
    images, maps, labels, predictions = _batch(3, taps)
    path = tmp_path / "nested" / "dir" / f"grid_{taps}.png"
    written = visualize.save_attention_grid(path, images, maps, labels, predictions)
    assert written == str(path)
    with Image.open(path) as png:
        assert png.format == "PNG"
        width, height = png.size
    # Roughly square cells of about 100-250 px: width grows with taps, height with rows.
    assert 100 * (1 + taps) <= width <= 250 * (1 + taps)
    assert 100 * 3 <= height <= 300 * 3


def test_grid_has_one_column_per_tap_titled_with_its_name():
    images, maps, labels, predictions = _batch(2, 3)
    fig = visualize.attention_grid(images, maps, labels, predictions)
    assert len(fig.axes) == 2 * 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1:4] == ["att1", "att2", "att3"]
    assert all(not ax.axison for ax in fig.axes)


def test_grid_without_attention_shows_only_the_images():
    images, _, labels, predictions = _batch(4, 0)
    fig = visualize.attention_grid(images, {}, labels, predictions)
    assert len(fig.axes) == 4


def test_grid_shows_at_most_max_images_rows():
    images, maps, labels, predictions = _batch(5, 2)
    fig = visualize.attention_grid(images, maps, labels, predictions, max_images=2)
    assert len(fig.axes) == 2 * 3


def test_grid_titles_use_class_names_and_flag_wrong_predictions_in_red():
    images, maps, labels, predictions = _batch(2, 1)  # row 0 right, row 1 wrong
    fig = visualize.attention_grid(images, maps, labels, predictions, CLASS_NAMES)
    texts = " ".join(_figure_texts(fig))
    assert "true: cat / pred: cat" in texts
    assert "true: dog / pred: ship" in texts
    right, wrong = fig.axes[0].title, fig.axes[2].title
    assert to_rgb(wrong.get_color()) == pytest.approx(to_rgb("tab:red"), abs=1e-2)
    assert to_rgb(right.get_color()) == pytest.approx(to_rgb("black"))


def test_grid_titles_use_indices_without_class_names():
    images, maps, labels, predictions = _batch(2, 1)
    texts = _figure_texts(visualize.attention_grid(images, maps, labels, predictions))
    assert "true: 1 / pred: 2" in texts


def test_grid_reports_peak_values_and_flat_maps():
    images, maps, labels, predictions = _batch(2, 2)
    maps["att1"] = np.full((2, H, W), 1.0 / (H * W), np.float32)  # flat, as att1 often is
    texts = _figure_texts(visualize.attention_grid(images, maps, labels, predictions))
    flat_notes = [t for t in texts if t.startswith("flat map")]
    peak_notes = [t for t in texts if t.startswith("peak ")]
    assert len(flat_notes) == 2 and "0.0104" in flat_notes[0]
    assert len(peak_notes) == 2
    assert f"peak {maps['att2'][0].max():.3g}" in peak_notes


def _bad_inputs(case: str) -> dict:
    """A 3-image batch with one input given the wrong shape."""
    images, maps, labels, predictions = _batch(3, 1)
    inputs = {"images": images, "maps": maps, "labels": labels, "predictions": predictions}
    bad = {
        "map_hw": {"maps": {"att1": maps["att1"][:, :, :-1]}},  # [3, 8, 11]
        "map_batch": {"maps": {"att1": maps["att1"][:2]}},  # [2, 8, 12]
        "labels_batch": {"labels": labels[:2]},
        "predictions_rank": {"predictions": predictions[:, None]},
        "images_rank": {"images": images[..., 0]},
    }[case]
    return inputs | bad


@pytest.mark.parametrize(
    "case,expected",
    [
        ("map_hw", r"map 'att1' must be \[B, H, W\] = \[3, 8, 12\].*got shape \[3, 8, 11\]"),
        ("map_batch", r"map 'att1' must be \[B, H, W\] = \[3, 8, 12\].*got shape \[2, 8, 12\]"),
        ("labels_batch", r"labels must be integer \[B\] = \[3\].*got shape \[2\]"),
        ("predictions_rank", r"predictions must be integer \[B\] = \[3\].*got shape \[3, 1\]"),
        ("images_rank", r"images must be \[B, H, W, 3\].*got shape \[3, 8, 12\]"),
    ],
)
def test_grid_rejects_mismatched_shapes_naming_the_expected_shape(tmp_path, case, expected):
    with pytest.raises(ValueError, match=expected):
        visualize.save_attention_grid(tmp_path / "x.png", **_bad_inputs(case))
    assert not (tmp_path / "x.png").exists()


def test_grid_rejects_class_index_outside_class_names():
    images, maps, labels, predictions = _batch(3, 1)
    with pytest.raises(ValueError, match="out of range for class_names of length 2"):
        visualize.attention_grid(images, maps, labels, predictions, ["a", "b"])
