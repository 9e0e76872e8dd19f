"""Tests for ltpa_jax.posthoc: Grad-CAM at a named layer and CAM, against NumPy and finite
differences on width-1/16 networks at 32x32 in float32, in eval mode (shifted running averages).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model

from ltpa_jax import posthoc
from ltpa_jax.inference import predict
from ltpa_jax.models import vgg

WIDTH = 1 / 16
S = 32
NUM_CLASSES = 10
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _model(**overrides):
    return tiny_model(**overrides)  # WIDTH and NUM_CLASSES.


def _images(batch: int, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, S, S, 3))


def _variables(model):
    """Eval variables whose running statistics differ from the initial ones (so that eval mode
    is observable) while every layer stays alive: means shifted and variances scaled a little."""
    key, images = jax.random.key(0, impl="unsafe_rbg"), _images(1)
    init = jax.jit(model.init).lower(key, images).compile(FAST_COMPILE)(key, images)
    leaves, treedef = jax.tree.flatten(init["batch_stats"])
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(init["batch_stats"])[0]]
    rng = np.random.default_rng(0)
    stats = [
        leaf * np.exp(0.2 * rng.standard_normal(leaf.shape)).astype(np.float32)
        if path[-1].key == "var"
        else leaf + 0.05 * rng.standard_normal(leaf.shape).astype(np.float32)
        for path, leaf in zip(paths, leaves, strict=True)
    ]
    # Batch-norm scales 1 (the reference preset draws them from U(0, 1)): the finite-difference
    # test's largest gradient entries then lie away from the network's kinks, as they did
    # before the reference's initialisation was adopted.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.ones_like(x) if path[-1].key == "scale" else x, init["params"]
    )
    return {"params": params, "batch_stats": jax.tree.unflatten(treedef, stats)}


def _abstract_variables(model):
    images = jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


@functools.cache
def _setup(tap_position: str):
    model = _model(num_taps=2, tap_position=tap_position)
    return model, _variables(model)


# --- Finite-difference reference. ---------------------------------------------------------------


def _perturbed_logits_fn(model, variables, images, tap_position, monkeypatch):
    """logit(images, A + E) for the local features A of tap "att2", E [1, H, W, C] a NumPy array.

    Independent of posthoc's own perturbation: "before" adds E to conv10's output through an
    interceptor written here; "after" adds E to the output of the max-pool that follows conv10
    (the VGG's second max-pool call), replacing `vgg.max_pool`.
    """
    current = {"E": None}

    if tap_position == "after":
        calls = {"n": 0}
        original = vgg.max_pool

        def max_pool(x):
            calls["n"] += 1
            out = original(x)
            return out + current["E"] if calls["n"] == 2 else out

        monkeypatch.setattr(vgg, "max_pool", max_pool)

        def logits(E):
            calls["n"] = 0
            current["E"] = jnp.asarray(E, jnp.float32)
            return np.asarray(predict(model, variables, images), np.float64)

        return logits

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.module.path == ("conv10",) and context.method_name == "__call__":
            return out + current["E"]
        return out

    def logits(E):
        current["E"] = jnp.asarray(E, jnp.float32)
        with nn.intercept_methods(interceptor):
            return np.asarray(predict(model, variables, images), np.float64)

    return logits


@pytest.mark.parametrize("tap_position", ["before", "after"])
def test_grad_cam_matches_finite_differences(tap_position, monkeypatch):
    model, variables = _setup(tap_position)
    images = _images(1, seed=3)
    parts = posthoc.grad_cam_parts(model, variables, images, layer="att2")  # predicted class
    target = int(parts["target"][0])
    features = np.asarray(parts["features"], np.float64)
    side = S // 2 if tap_position == "before" else S // 4
    assert features.shape == (1, side, side, round(512 * WIDTH))

    logits = _perturbed_logits_fn(model, variables, images, tap_position, monkeypatch)
    zero = np.zeros(features.shape, np.float32)
    np.testing.assert_allclose(logits(zero), np.asarray(parts["logits"]), rtol=1e-5, atol=1e-5)
    eps = 1e-2

    def slope(direction):
        return (logits(eps * direction)[0, target] - logits(-eps * direction)[0, target]) / (
            2 * eps
        )

    # Channel weights: shifting channel c everywhere by eps moves the logit by eps * H * W * w_c.
    weights = np.asarray(parts["weights"][0], np.float64)
    channels = np.argsort(-np.abs(weights))[:3]
    fd_weights = {}
    for c in channels:
        direction = np.zeros_like(zero)
        direction[..., c] = 1.0
        fd_weights[c] = slope(direction) / (side * side)
        np.testing.assert_allclose(fd_weights[c], weights[c], rtol=2e-2, atol=1e-5)

    # Single entries of the gradient.
    gradients = np.asarray(parts["gradients"][0], np.float64)
    for flat in np.argsort(-np.abs(gradients).ravel())[:3]:
        direction = np.zeros_like(zero)
        direction[(0, *np.unravel_index(flat, gradients.shape))] = 1.0
        np.testing.assert_allclose(slope(direction), gradients.ravel()[flat], rtol=2e-2, atol=1e-5)

    # The map from the features and the weights, in NumPy.
    expected = np.maximum(np.einsum("bhwc,c->bhw", features, weights), 0.0)
    np.testing.assert_allclose(np.asarray(parts["map"]), expected, rtol=1e-4, atol=1e-6)
    assert expected.max() > 0


def test_grad_cam_is_jittable_and_batched():
    model, variables = _setup("before")
    images = _images(3, seed=5)
    jitted = jax.jit(posthoc.grad_cam, static_argnums=0, static_argnames="layer")
    batched = jitted(model, variables, images, layer="att2")
    assert batched.shape == (3, S // 2, S // 2)
    eager = posthoc.grad_cam(model, variables, images, layer="att2")
    np.testing.assert_allclose(batched, eager, rtol=1e-4, atol=1e-6)
    single = jnp.concatenate(
        [jitted(model, variables, images[i : i + 1], layer="att2") for i in range(3)]
    )
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6)


def test_grad_cam_of_a_rematerialised_model_is_the_same():
    model, variables = _setup("before")
    images = _images(1, seed=8)
    expected = posthoc.grad_cam(model, variables, images, layer="conv10")
    for remat in ("full", "keep_conv"):
        got = posthoc.grad_cam(model.clone(remat=remat), variables, images, layer="conv10")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_grad_cam_without_target_explains_the_predicted_class():
    model, variables = _setup("before")
    images = _images(3, seed=6)
    predicted = np.argmax(np.asarray(predict(model, variables, images)), axis=-1)
    parts = posthoc.grad_cam_parts(model, variables, images, layer="conv10")
    np.testing.assert_array_equal(parts["target"], predicted)
    explicit = posthoc.grad_cam(
        model, variables, images, layer="conv10", target=jnp.asarray(predicted)
    )
    np.testing.assert_allclose(parts["map"], explicit, rtol=1e-5, atol=1e-7)
    other = posthoc.grad_cam_parts(
        model, variables, images, layer="conv10", target=(predicted[0] + 1) % NUM_CLASSES
    )
    np.testing.assert_array_equal(other["target"], [(predicted[0] + 1) % NUM_CLASSES] * 3)
    assert not np.allclose(other["weights"], parts["weights"])


# --- Shapes and errors (traced only). -----------------------------------------------------------


@pytest.mark.parametrize(
    "num_taps, tap_position, layer, side",
    [
        (0, "before", "att1", S),
        (0, "before", "att3", S // 4),
        (0, "before", "conv13/BatchNorm_0", S // 4),
        (3, "after", "att1", S // 2),
        (1, "after", "att3", S // 8),
        (3, "before", "conv15", S // 16),
    ],
)
def test_grad_cam_shapes_on_any_vgg(num_taps, tap_position, layer, side):
    model = _model(num_taps=num_taps, tap_position=tap_position)
    images = jax.ShapeDtypeStruct((2, S, S, 3), jnp.float32)
    out = jax.eval_shape(
        lambda v, x: posthoc.grad_cam(model, v, x, layer=layer), _abstract_variables(model), images
    )
    assert (out.shape, out.dtype) == ((2, side, side), jnp.float32)


@pytest.mark.parametrize("layer, side", [("stage2_block1", S // 2), ("final_bn", S // 4)])
def test_grad_cam_shapes_on_the_resnet(layer, side):
    model = _model(backbone="resnet", depth=11, num_taps=2, tap_position="before")
    images = jax.ShapeDtypeStruct((2, S, S, 3), jnp.float32)
    out = jax.eval_shape(
        lambda v, x: posthoc.grad_cam(model, v, x, layer=layer), _abstract_variables(model), images
    )
    assert (out.shape, out.dtype) == ((2, side, side), jnp.float32)


def test_unknown_layer_names_the_valid_ones():
    model = _model(num_taps=0)
    images = jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32)
    with pytest.raises(ValueError, match="Unknown layer 'conv99'") as error:
        jax.eval_shape(
            lambda v, x: posthoc.grad_cam(model, v, x, layer="conv99"),
            _abstract_variables(model),
            images,
        )
    for valid in ("att1", "att2", "att3", "conv1", "conv10", "conv15", "conv10/BatchNorm_0"):
        assert f" {valid}," in str(error.value) or f" {valid}." in str(error.value)
    names = posthoc.layer_names(model, _abstract_variables(model), images)
    assert names[:3] == ("att1", "att2", "att3")
    assert names.index("conv2") < names.index("conv10")


# --- CAM. ---------------------------------------------------------------------------------------


def test_cam_of_plain_resnet_averages_to_the_logits():
    model = _model(backbone="resnet", depth=11, num_taps=0, tap_position="before")
    variables = _variables(model)
    images = _images(2, seed=7)
    logits = np.asarray(predict(model, variables, images))
    bias = np.asarray(variables["params"]["classifier"]["bias"])
    for k in (0, 3):
        maps = posthoc.cam(model, variables, images, target=k)
        assert maps.shape == (2, S // 4, S // 4)
        np.testing.assert_allclose(
            maps.mean(axis=(1, 2)) + bias[k], logits[:, k], rtol=1e-4, atol=1e-5
        )
    predicted = posthoc.cam(model, variables, images)
    explicit = posthoc.cam(model, variables, images, target=jnp.argmax(logits, axis=-1))
    np.testing.assert_allclose(predicted, explicit)
    rectified = jax.jit(posthoc.cam, static_argnums=0, static_argnames="rectify")(
        model, variables, images, rectify=True
    )
    np.testing.assert_allclose(rectified, np.maximum(predicted, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, why",
    [
        ({"num_taps": 0}, "convolution over the whole remaining map"),
        ({"num_taps": 3}, "attention-weighted descriptors"),
        ({"backbone": "resnet", "depth": 11, "num_taps": 2, "tap_position": "before"}, "attention"),
    ],
)
def test_cam_where_the_head_does_not_allow_it_points_to_grad_cam(overrides, why):
    model = _model(**overrides)
    with pytest.raises(ValueError, match=f"(?s)CAM does not apply.*{why}.*grad_cam"):
        posthoc.cam(model, _abstract_variables(model), jnp.zeros((1, S, S, 3)))
