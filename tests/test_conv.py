"""The matmul (im2col) and Winograd convolutions equal XLA's, in value and gradient, so
conv_impl never changes a model's outputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ltpa_jax import create_model, predict_with_attention
from ltpa_jax.configs import default
from ltpa_jax.models.conv import matmul_conv, select_conv, winograd_conv

DIMS = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "kernel, padding",
    [((3, 3), ((1, 1), (1, 1))), ((1, 1), ((0, 0), (0, 0))), ((2, 2), "VALID"), ((4, 4), "VALID")],
)
def test_matmul_conv_equals_lax_conv(kernel, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(*kernel, 3, 5)).astype(np.float32))
    dims = ("NHWC", "HWIO", "NHWC")
    expected = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=dims)
    got = jax.jit(matmul_conv, static_argnums=(2, 3, 6))(x, w, (1, 1), padding, None, None, dims)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_strided_conv_falls_back_to_lax():
    x = jnp.ones((1, 8, 8, 2))
    w = jnp.ones((3, 3, 2, 4))
    dims = ("NHWC", "HWIO", "NHWC")
    got = matmul_conv(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dims)
    expected = lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dims)
    np.testing.assert_allclose(got, expected)


def _pairing(conv, x, w, cotangent):
    """(<conv(x, w), cotangent> in float32, conv(x, w)) for a 3x3 "same" convolution."""
    y = conv(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMS)
    return jnp.sum(y.astype(jnp.float32) * cotangent), y


def _value_and_grads_fn(conv, **jit_kwargs):
    """jit of (x, w, cotangent) -> ((pairing, conv(x, w)), (d/dx, d/dw)) of `_pairing`."""
    pairing = functools.partial(_pairing, conv)
    return jax.jit(jax.value_and_grad(pairing, argnums=(0, 1), has_aux=True), **jit_kwargs)


def _value_and_grads(conv, x, w, cotangent):
    """conv(x, w) and the gradients of <conv(x, w), cotangent> for x and w, in float32."""
    (_, y), grads = _value_and_grads_fn(conv)(x, w, cotangent)
    return [np.asarray(a, np.float32) for a in (y, *grads)]


def _random_conv_inputs(shape, dtype):
    """Input [B, H, W, C_in], 3x3 kernel and output cotangent for `shape` (B, H, W, C_in, C_out)."""
    b, h, w, c_in, c_out = shape
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.normal(size=(b, h, w, c_in)), dtype)
    kernel = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)) / np.sqrt(9 * c_in), dtype)
    cotangent = jnp.asarray(rng.normal(size=(b, h, w, c_out)), dtype)
    return x, kernel, cotangent


# The models' 3x3 "same" convolutions (shape [B, H, W, C_in, C_out]): spatial sizes 32 down
# to 2 for CIFAR and the odd 7 of 224x224 inputs, 64 and more input channels for Winograd.
WINOGRAD_SHAPES = [(2, 8, 8, 64, 64), (2, 4, 4, 64, 128), (1, 7, 7, 64, 16), (2, 2, 2, 128, 64)]


@pytest.mark.parametrize("shape", WINOGRAD_SHAPES + [(2, 6, 5, 3, 8), (1, 1, 1, 64, 4)])
@pytest.mark.parametrize("impl", [winograd_conv, matmul_conv], ids=["winograd", "matmul"])
def test_conv_equals_lax_conv_in_value_and_gradient_float32(impl, shape):
    """Tolerance: 1e-4 relative to each array's largest entry (float32 rounding)."""
    x, kernel, cotangent = _random_conv_inputs(shape, jnp.float32)
    expected = _value_and_grads(lax.conv_general_dilated, x, kernel, cotangent)
    for got, want in zip(_value_and_grads(impl, x, kernel, cotangent), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("shape", WINOGRAD_SHAPES)
@pytest.mark.parametrize("impl", [winograd_conv, matmul_conv], ids=["winograd", "matmul"])
def test_conv_equals_lax_conv_in_value_and_gradient_bfloat16(impl, shape):
    """bfloat16 inputs and kernels against XLA's float32 convolution of the same bfloat16
    numbers. Tolerance: 3e-2 relative to each array's largest entry (bfloat16 keeps 8
    significant bits, ~4e-3, and the sums round at every step); the float32 reference's own
    bfloat16 rounding alone gives up to 4e-3."""
    x, kernel, cotangent = _random_conv_inputs(shape, jnp.bfloat16)
    expected = _value_and_grads(
        lax.conv_general_dilated, x.astype(jnp.float32), kernel.astype(jnp.float32), cotangent
    )
    got = _value_and_grads(impl, x, kernel, cotangent)
    for g, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, want, rtol=0, atol=3e-2 * np.abs(want).max())


def test_winograd_hands_other_convolutions_to_matmul_conv():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 64)), jnp.float32)
    for kernel, padding in [((1, 1), ((0, 0), (0, 0))), ((3, 3), "VALID"), ((2, 2), "VALID")]:
        w = jnp.asarray(rng.normal(size=(*kernel, 64, 4)), jnp.float32)
        expected = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DIMS)
        got = winograd_conv(x, w, (1, 1), padding, dimension_numbers=DIMS)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    w = jnp.asarray(rng.normal(size=(3, 3, 64, 4)), jnp.float32)
    expected = lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DIMS)
    got = winograd_conv(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DIMS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_auto_picks_winograd_on_cpu_and_fails_on_unknown():
    assert jax.default_backend() == "cpu"
    assert select_conv("auto").__wrapped__ is winograd_conv
    assert select_conv("winograd").__wrapped__ is winograd_conv
    assert select_conv("matmul").__wrapped__ is matmul_conv
    assert select_conv("xla").__wrapped__ is lax.conv_general_dilated
    with pytest.raises(KeyError, match="fft"):  # Configs are validated before (test_validation).
        select_conv("fft")


@pytest.mark.parametrize("conv_impl", ["matmul", "winograd"])
def test_same_parameters_same_logits_and_attention_with_each_implementation(conv_impl):
    """At width 1/8 the model has 8 to 64 channels: winograd runs the layers with 64 input
    channels and hands the others to matmul_conv."""
    config = default.get_config()
    config.model.width = 1 / 8
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    config.model.conv_impl = "xla"
    xla_model = create_model(config)
    variables = jax.jit(xla_model.init)(jax.random.key(0), images)
    variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    config.model.conv_impl = conv_impl
    model = create_model(config)
    run = jax.jit(predict_with_attention, static_argnums=0, static_argnames="upsample")
    logits, maps = run(model, variables, images, upsample=False)
    expected_logits, expected_maps = run(xla_model, variables, images, upsample=False)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert maps.keys() == expected_maps.keys() == {"att1", "att2", "att3"}
    for name, expected in expected_maps.items():
        np.testing.assert_allclose(maps[name], expected, rtol=1e-4, atol=1e-5)


def test_winograd_conv_on_a_batch_sharded_over_8_devices():
    """The data-parallel layout of training: batch on the mesh's "data" axis, kernel
    replicated. Values and gradients match the single-device ones, the output stays batch
    sharded, and the compiled program gathers no activations (only the kernel gradient is
    summed across devices)."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from ltpa_jax.train import create_mesh

    mesh = create_mesh()
    assert mesh.size == 8
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, 64)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 64, 16)) / 24, jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(8, 8, 8, 16)), jnp.float32)
    expected = _value_and_grads(winograd_conv, x, kernel, cotangent)
    batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    step = _value_and_grads_fn(winograd_conv, in_shardings=(batch, replicated, batch))
    args = (jax.device_put(x, batch), jax.device_put(kernel, replicated))
    args += (jax.device_put(cotangent, batch),)
    (_, y), (dx, dw) = step(*args)
    assert y.sharding.is_equivalent_to(batch, 4) and dx.sharding.is_equivalent_to(batch, 4)
    program = step.lower(*args).compile().as_text()
    assert "all-reduce" in program and "all-gather" not in program
    for got, want in zip((y, dx, dw), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
