"""AG-CNN: crop selection on hand-made maps and against SciPy, crops, training and resume."""

import glob
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from conftest import assert_same_runs, override, train_killed_and_resumed

from configs import digits_agcnn
from ltpa_jax import inference, localization, rundir, train, validation
from ltpa_jax.models import agcnn


def test_crop_box_is_the_largest_region_above_the_threshold():
    heat = np.zeros((3, 6, 6), np.float32)
    # Map 0: a 4-cell square and a 5-cell diagonal chain (8-connected) -> the chain wins.
    heat[0, 0:2, 0:2] = 0.9
    for i in range(5):
        heat[0, 1 + i, 5 - i if i < 4 else 2] = 0.8
    heat[0, 5, 0] = 0.7  # Exactly at the threshold: not in the mask.
    # Map 1: one cell above the threshold.
    heat[1, 3, 4] = 1.0
    # Map 2: nothing above the threshold -> the whole map.
    heat[2] = 0.5
    boxes = np.asarray(agcnn.select_boxes(jnp.asarray(heat), 0.7))
    np.testing.assert_array_equal(boxes, [[1, 2, 6, 6], [3, 4, 4, 5], [0, 0, 6, 6]])
    region = np.asarray(agcnn.largest_region(jnp.asarray(heat > 0.7)))
    assert region[0].sum() == 5 and not region[0, 0:2, 0:2].any()


def _scipy_boxes(mask: np.ndarray) -> np.ndarray:
    """Reference: SciPy's 8-connected labels; ties go to the component whose largest flat
    index is smallest (what max-propagation labels it with)."""
    out = []
    for m in mask:
        labels, count = scipy.ndimage.label(m, structure=np.ones((3, 3)))
        if count == 0:
            out.append([0, 0, *m.shape])
            continue
        sizes = [
            (-(labels == k).sum(), np.flatnonzero(labels == k).max()) for k in range(1, count + 1)
        ]
        best = 1 + min(range(count), key=lambda k: sizes[k])
        ys, xs = np.nonzero(labels == best)
        out.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return np.asarray(out)


def test_crop_boxes_match_scipy_connected_components_on_random_maps():
    heat = np.random.default_rng(0).uniform(size=(32, 9, 7)).astype(np.float32)
    for threshold in (0.5, 0.7, 0.9):
        boxes = jax.jit(agcnn.select_boxes, static_argnums=1)(jnp.asarray(heat), threshold)
        np.testing.assert_array_equal(np.asarray(boxes), _scipy_boxes(heat > threshold))


def test_crop_and_resize_copies_a_box_of_its_size_and_interpolates_linearly():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    boxes = jnp.asarray([[2, 3, 8, 9], [0, 0, 6, 6]], jnp.float32)
    crops = np.asarray(agcnn.crop_and_resize(jnp.asarray(images), boxes, 6))
    np.testing.assert_allclose(crops[0], images[0, 2:8, 3:9], atol=1e-6)
    np.testing.assert_allclose(crops[1], images[1, 0:6, 0:6], atol=1e-6)
    # Bilinear sampling is exact on a linear image: value = 10 y + x at pixel centres.
    y, x = np.mgrid[0:16, 0:16].astype(np.float32)
    ramp = np.repeat((10 * y + x)[None, :, :, None], 1, axis=-1)
    zoomed = np.asarray(agcnn.crop_and_resize(jnp.asarray(ramp), jnp.asarray([[4, 2, 8, 10]]), 8))
    ys = 4 + (np.arange(8) + 0.5) * 0.5 - 0.5
    xs = 2 + (np.arange(8) + 0.5) * 1.0 - 0.5
    np.testing.assert_allclose(zoomed[0, :, :, 0], 10 * ys[:, None] + xs[None, :], atol=1e-4)


def test_select_crop_scales_the_box_to_the_image_and_is_not_differentiated():
    images = jnp.asarray(np.random.default_rng(2).normal(size=(1, 16, 16, 3)), jnp.float32)
    heat = jnp.zeros((1, 4, 4)).at[0, 1:3, 2].set(1.0)
    crops, boxes = agcnn.select_crop(images, heat, 0.7, 8)
    np.testing.assert_array_equal(np.asarray(boxes), [[4, 8, 12, 12]])
    assert crops.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(
        np.asarray(agcnn.crop_and_resize(images, boxes, 8)), np.asarray(crops), atol=1e-6
    )
    grad = jax.grad(lambda h: agcnn.select_crop(images, h, 0.7, 8)[0].sum())(heat)
    assert not np.asarray(grad).any()


def test_heat_map_is_the_channel_max_of_absolute_activations_scaled_to_unit_range():
    features = np.random.default_rng(3).normal(size=(2, 5, 5, 4)).astype(np.float32)
    heat = np.abs(features).max(-1)
    low, high = heat.min((1, 2), keepdims=True), heat.max((1, 2), keepdims=True)
    np.testing.assert_allclose(
        np.asarray(agcnn.heat_map(jnp.asarray(features))), (heat - low) / (high - low), atol=1e-6
    )
    assert not np.asarray(agcnn.heat_map(jnp.ones((1, 3, 3, 2)))).any()  # Flat: zeros.


def tiny_config(**fields):
    """digits_agcnn at 1/16 width, 32x32, 64 training images, 4 steps, saved every 2."""
    config = digits_agcnn.get_config()
    config.model.width = 1 / 16
    config.model.agcnn_crop_size = 16
    return override(
        config,
        num_digits_train=64,
        num_digits_test=32,
        shuffle_buffer=64,
        batch_size=16,
        eval_batch_size=16,
        num_train_steps=4,
        warmup_epochs=0.0,
        log_every_steps=2,
        eval_every_steps=4,
        checkpoint_every_steps=2,
        keep_checkpoints=10,
        num_picture_images=2,
        **fields,
    )


@pytest.mark.slow
def test_agcnn_trains_resumes_exactly_after_a_kill_and_its_maps_go_through_the_api(
    tmp_path, monkeypatch, capsys
):
    config = tiny_config()
    reference, interrupted = train_killed_and_resumed(config, tmp_path, monkeypatch, kill_at=2)
    assert "Resuming from the checkpoint at step 2" in capsys.readouterr().out
    assert_same_runs(reference, interrupted)
    assert glob.glob(f"{reference}/pictures/attention_step*.png")

    run = rundir.open_run(reference)
    images = jnp.asarray(np.random.default_rng(4).normal(size=(2, 32, 32, 3)), jnp.float32)
    maps = inference.attention_maps(run.model, run.variables, images)
    assert set(maps) == {"heatmap"} and maps["heatmap"].shape == (2, 32, 32)
    raw = inference.attention_maps(run.model, run.variables, images, upsample=False)["heatmap"]
    assert raw.shape == (2, 8, 8) and float(raw.min()) >= 0 and float(raw.max()) <= 1
    boxes = jnp.asarray([[0, 0, 16, 16], [8, 8, 24, 24]], jnp.float32)
    scores = localization.finalize(localization.localization_sums(maps, boxes, jnp.ones(2, bool)))
    assert 0 <= scores["heatmap"]["mass"] <= 1
    # The training loss is the mean of the three branches' cross-entropies.
    labels = jnp.asarray([1, 2])
    variables = {"params": run.variables["params"], "batch_stats": run.variables["batch_stats"]}
    (loss, logits), _ = run.model.apply(
        variables, images, labels, train=True, mutable=["batch_stats"], method="loss"
    )
    branches, _ = run.model.apply(
        variables, images, True, mutable=["batch_stats"], method="branches"
    )
    expected = sum(train.cross_entropy(v, labels) for v in branches.values()) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(logits, branches["fusion"], rtol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model.agcnn_threshold": 1.0}, "agcnn_threshold=1.0 must be in [0, 1)"),
        ({"model.agcnn_crop_size": 30}, "agcnn_crop_size=30 must be 0"),
        ({"model.squeeze_excitation": 16}, "not possible for config.model.backbone='agcnn'"),
    ],
)
def test_impossible_agcnn_fields_are_refused_with_their_name(fields, message):
    with pytest.raises(validation.ConfigError, match=re.escape(message)):
        validation.check_config(override(digits_agcnn.get_config(), **fields))
