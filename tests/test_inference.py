"""Tests for ltpa_jax.inference: attention maps, logits and descriptors in eval mode.

Key and shape checks trace the API with `jax.eval_shape` (no compute); numerical checks run one
width-1/16 VGG-att3 model, initialised once for the module.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model

from ltpa_jax import attention_maps, descriptors, predict

WIDTH = 1 / 16
S = 32
NUM_CLASSES = 10
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _model(**overrides):
    return tiny_model(**overrides)  # WIDTH and NUM_CLASSES.


def _images(batch: int, seed: int = 0, size: int = S) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def _abstract_variables(model, batch: int = 1, size: int = S):
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


@pytest.fixture(scope="module")
def model():
    return _model()  # VGG-att3-concat-pc, softmax, taps before pooling


@pytest.fixture(scope="module")
def init_output(model):
    """The full output of `model.init` (params, batch_stats and the sown collections)."""
    # rbg keys and XLA's backend optimisations off: the initialisers compile several times faster.
    key, images = jax.random.key(0, impl="unsafe_rbg"), _images(1)
    init = jax.jit(model.init).lower(key, images).compile(FAST_COMPILE)
    return init(key, images)


@pytest.fixture(scope="module")
def variables(init_output):
    """Eval variables with non-trivial running statistics, so that eval mode is observable."""
    stats = jax.tree.map(lambda x: x + 0.5, init_output["batch_stats"])
    return {"params": init_output["params"], "batch_stats": stats}


@pytest.fixture(scope="module")
def jit_maps(model):
    return jax.jit(functools.partial(attention_maps, model), static_argnames="upsample")


@pytest.fixture(scope="module")
def batch():
    return _images(3, seed=1)


@pytest.fixture(scope="module")
def tap_maps(jit_maps, variables, batch):
    """Jitted attention maps of `batch` at the taps' resolutions."""
    return jit_maps(variables, batch, upsample=False)


# --- Keys and shapes (traced only). ------------------------------------------------------------

TAP_KEYS = {0: set(), 1: {"att3"}, 2: {"att2", "att3"}, 3: {"att1", "att2", "att3"}}
TAP_SIDES = {"before": {"att1": S, "att2": S // 2, "att3": S // 4}}
TAP_SIDES["after"] = {name: side // 2 for name, side in TAP_SIDES["before"].items()}


@pytest.mark.parametrize("upsample", [True, False], ids=["upsampled", "tap_resolution"])
@pytest.mark.parametrize("tap_position", ["before", "after"])
@pytest.mark.parametrize("num_taps", [0, 1, 2, 3])
def test_attention_maps_keys_and_shapes(num_taps, tap_position, upsample):
    model = _model(num_taps=num_taps, tap_position=tap_position)
    variables = _abstract_variables(model)
    images = jax.ShapeDtypeStruct((2, S, S, 3), jnp.float32)
    maps = jax.eval_shape(
        functools.partial(attention_maps, model, upsample=upsample), variables, images
    )
    assert set(maps) == TAP_KEYS[num_taps]
    for name, m in maps.items():
        side = S if upsample else TAP_SIDES[tap_position][name]
        assert m.shape == (2, side, side), name
        assert m.dtype == jnp.float32


@pytest.mark.parametrize("projection, att1_width", [("up", 32), ("down", 16)])
@pytest.mark.parametrize("num_taps", [0, 1, 3])
def test_descriptors_keys_and_shapes(num_taps, projection, att1_width):
    model = _model(num_taps=num_taps, projection=projection)
    variables = _abstract_variables(model)
    images = jax.ShapeDtypeStruct((2, S, S, 3), jnp.float32)
    out = jax.eval_shape(functools.partial(descriptors, model), variables, images)
    assert set(out) == {"global"} | TAP_KEYS[num_taps]
    expected = {"global": 512 * WIDTH, "att1": att1_width, "att2": 32, "att3": 32}
    for name, d in out.items():
        assert d.shape == (2, expected[name]), name
        assert d.dtype == jnp.float32


# --- Numerical behaviour of one small model. ---------------------------------------------------


def test_softmax_maps_sum_to_one_at_tap_resolution(tap_maps):
    assert set(tap_maps) == {"att1", "att2", "att3"}
    for name, m in tap_maps.items():
        np.testing.assert_allclose(m.sum(axis=(1, 2)), np.ones(3), rtol=1e-5, err_msg=name)
        assert np.all(np.asarray(m) >= 0)


def test_attention_maps_are_deterministic(jit_maps, variables, batch, tap_maps):
    again = jit_maps(variables, batch, upsample=False)
    for name in tap_maps:
        np.testing.assert_array_equal(again[name], tap_maps[name])


def test_attention_maps_under_jit_agree_with_eager(model, jit_maps, variables, batch):
    eager = attention_maps(model, variables, batch[:2])
    jitted = jit_maps(variables, batch[:2], upsample=True)
    assert set(jitted) == set(eager)
    for name in eager:
        assert jitted[name].shape == (2, S, S)
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-4, atol=1e-6)


def test_attention_maps_use_running_averages(jit_maps, variables, batch, tap_maps):
    # In eval mode an image's maps do not depend on the other images of its batch.
    alone = jit_maps(variables, batch[:1], upsample=False)
    for name in tap_maps:
        np.testing.assert_allclose(alone[name][0], tap_maps[name][0], rtol=1e-4, atol=1e-7)


def test_attention_maps_accept_the_full_init_output(model, init_output, jit_maps, batch):
    # `model.init` also returns the sown "attention" and "descriptors" collections; the maps must
    # still be those of `batch`, not the ones sown at init (a batch of 1).
    expected = jit_maps(
        {"params": init_output["params"], "batch_stats": init_output["batch_stats"]},
        batch,
        upsample=False,
    )
    got = jit_maps(init_output, batch, upsample=False)
    for name in expected:
        assert got[name].shape == (3, *expected[name].shape[1:])
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7)


def test_predict_returns_logits(model, variables, batch):
    logits = jax.jit(functools.partial(predict, model))(variables, batch)
    assert logits.shape == (3, NUM_CLASSES) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_descriptors_of_full_init_output_match_the_batch(model, init_output, batch):
    out = jax.jit(functools.partial(descriptors, model))(init_output, batch)
    assert set(out) == {"global", "att1", "att2", "att3"}
    assert all(d.shape[0] == 3 for d in out.values())
    assert all(np.all(np.isfinite(d)) for d in out.values())


# --- Input validation. --------------------------------------------------------------------------

BAD_INPUTS = {
    # case: (images, what the message says, the offending value it names)
    "rank3": (jnp.zeros((S, S, 3)), "rank 4", "(32, 32, 3)"),
    "one_channel": (jnp.zeros((1, S, S, 1)), "3 channels", "(1, 32, 32, 1)"),
    "non_square": (jnp.zeros((1, S, 2 * S, 3)), "square", "32x64"),
    "side_not_multiple_of_32": (jnp.zeros((1, 40, 40, 3)), "multiple of 32", "40x40"),
    "integer_dtype": (jnp.zeros((1, S, S, 3), jnp.uint8), "floating point", "uint8"),
}


@pytest.mark.parametrize("api", [attention_maps, predict, descriptors], ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_value_error(model, api, case):
    images, message, offending = BAD_INPUTS[case]
    variables = _abstract_variables(model)
    with pytest.raises(ValueError, match=message) as info:
        api(model, variables, images)
    assert offending in str(info.value)


# --- Post-hoc maps through the same API (method=). -----------------------------------------------


def test_gradcam_maps_come_from_the_same_api(model, variables, batch):
    from ltpa_jax import inference, posthoc

    def both(v, x):
        logits, maps = inference.predict_with_attention(
            model, v, x, method="gradcam", layers=("att3",)
        )
        return logits, maps, posthoc.grad_cam(model, v, x, layer="att3"), predict(model, v, x)

    logits, maps, alone, plain_logits = jax.jit(both)(variables, batch)
    np.testing.assert_allclose(logits, plain_logits, rtol=1e-5, atol=1e-6)
    assert set(maps) == {"att3"} and maps["att3"].shape == (3, S, S)
    upsampled = inference.upsample_maps({"att3": alone}, S)["att3"]  # [3, S/4, S/4] -> [3, S, S]
    np.testing.assert_allclose(maps["att3"], upsampled, rtol=1e-4, atol=1e-7)
    # Default layers: the VGG's three tap layers, at their resolutions.
    shapes = jax.eval_shape(
        lambda v, x: inference.attention_maps(model, v, x, method="gradcam", upsample=False),
        variables,
        batch,
    )
    assert {k: v.shape[1] for k, v in shapes.items()} == {"att1": S, "att2": S // 2, "att3": S // 4}


def test_method_arguments_are_checked(model):
    from ltpa_jax import inference

    variables, images = _abstract_variables(model), jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32)
    with pytest.raises(ValueError, match="method='saliency' is not one of"):
        jax.eval_shape(
            lambda v, x: attention_maps(model, v, x, method="saliency"), variables, images
        )
    with pytest.raises(ValueError, match="is for method='gradcam'"):
        jax.eval_shape(
            lambda v, x: attention_maps(model, v, x, layers=("att3",)), variables, images
        )
    with pytest.raises(ValueError, match="CAM does not apply"):
        jax.eval_shape(lambda v, x: attention_maps(model, v, x, method="cam"), variables, images)
    from absl import flags

    from ltpa_jax import cli

    assert tuple(flags.FLAGS[cli.METHOD.name].parser.enum_values) == inference.METHODS


def test_cam_of_the_plain_resnet_through_attention_maps():
    from ltpa_jax import inference
    from ltpa_jax.configs import default
    from ltpa_jax.models import create_model

    config = default.get_config()
    config.model.update(backbone="resnet", depth=11, num_taps=0, width=1 / 4, num_classes=10)
    resnet = create_model(config)
    shapes = _abstract_variables(resnet)
    images = jax.ShapeDtypeStruct((2, S, S, 3), jnp.float32)
    maps = jax.eval_shape(
        lambda v, x: inference.attention_maps(resnet, v, x, method="cam", upsample=False),
        shapes,
        images,
    )
    assert {k: v.shape for k, v in maps.items()} == {"cam": (2, S // 4, S // 4)}
    grad = jax.eval_shape(
        lambda v, x: inference.attention_maps(resnet, v, x, method="gradcam", upsample=False),
        shapes,
        images,
    )
    assert {k: v.shape for k, v in grad.items()} == {
        "stage2_block1": (2, S // 2, S // 2),
        "stage3_block1": (2, S // 4, S // 4),
    }


def test_sown_maps_of_submodules_are_named_by_their_path():
    from ltpa_jax.inference import flatten_sown

    sown = {
        "att2": (1,),
        "self_attention13": {"map": (2,)},
        "stage3_block1": {"self_attention": {"map": (3,)}},
        "two": {"a": (4,), "b": (5,)},
    }
    assert flatten_sown(sown) == {
        "att2": 1,
        "self_attention13": 2,
        "stage3_block1/self_attention": 3,
        "two/a": 4,
        "two/b": 5,
    }
