"""The matmul (im2col) convolution equals XLA's, so conv_impl never changes a model's outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import default
from ltpa_jax import create_model, predict
from ltpa_jax.models.conv import matmul_conv, select_conv


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


def test_auto_picks_matmul_on_cpu_and_rejects_unknown():
    assert select_conv("auto").__wrapped__ is matmul_conv
    assert select_conv("xla").__wrapped__ is lax.conv_general_dilated
    with pytest.raises(ValueError, match="conv_impl"):
        select_conv("winograd")


def test_same_parameters_same_predictions_with_either_implementation():
    config = default.get_config()
    config.model.width = 1 / 16
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    config.model.conv_impl = "xla"
    xla_model = create_model(config)
    variables = jax.jit(xla_model.init)(jax.random.key(0), images)
    variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    config.model.conv_impl = "matmul"
    matmul_model = create_model(config)
    np.testing.assert_allclose(
        jax.jit(predict, static_argnums=0)(matmul_model, variables, images),
        jax.jit(predict, static_argnums=0)(xla_model, variables, images),
        rtol=1e-4,
        atol=1e-4,
    )
