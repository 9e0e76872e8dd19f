"""Convolution implementations pluggable into `nn.Conv(conv_general_dilated=...)`.

XLA's CPU convolutions are slow (several times slower than one big matrix multiply on the
machines we test on), so on CPU each convolution is computed as a single matmul over the
kh*kw shifted copies of the padded input (im2col). The kernel keeps its [kh, kw, C_in, C_out]
shape and name, so checkpoints are interchangeable between implementations.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

CONV_IMPLS = ("auto", "xla", "matmul")
CONV_OUTPUT = "conv_output"
"""`jax.ad_checkpoint.checkpoint_name` of every convolution's output (see models/remat.py)."""


def matmul_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """2-D convolution as one matmul over shifted input copies; same signature as lax's.

    Handles what our networks use (NHWC inputs [B, H, W, C_in], HWIO kernels
    [kh, kw, C_in, C_out], unit strides and dilations, one feature group, explicit or VALID
    padding) and defers anything else to `lax.conv_general_dilated`.

    Returns:
      [B, H', W', C_out].
    """
    simple = (
        lhs.ndim == 4
        and tuple(window_strides) == (1, 1)
        and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
        and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
        and feature_group_count == 1
        and (dimension_numbers is None or _is_nhwc(dimension_numbers))
        and (not isinstance(padding, str) or padding == "VALID")
    )
    if not simple:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    kh, kw, c_in, c_out = rhs.shape
    if not isinstance(padding, str):
        (top, bottom), (left, right) = padding
        lhs = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    b, h, w, _ = lhs.shape
    out_h, out_w = h - kh + 1, w - kw + 1
    if kh == kw == 1:
        patches = lhs
    elif out_h == 1 and out_w == 1:
        patches = lhs.reshape(b, 1, 1, kh * kw * c_in)
    else:
        patches = jnp.concatenate(
            [lhs[:, i : i + out_h, j : j + out_w, :] for i in range(kh) for j in range(kw)],
            axis=-1,
        )
    return jnp.einsum(
        "bhwk,kc->bhwc",
        patches,
        rhs.reshape(kh * kw * c_in, c_out),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _is_nhwc(dimension_numbers) -> bool:
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers(
            (1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC")
        )
    return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


def select_conv(conv_impl: str):
    """The convolution function for `conv_impl` ("auto": matmul on CPU, XLA elsewhere).

    Its output is named `CONV_OUTPUT` (for `models.remat`); `.__wrapped__` is the function that
    computes it, `matmul_conv` or `lax.conv_general_dilated`.
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"model.conv_impl={conv_impl!r} is not valid; use one of {CONV_IMPLS}.")
    if conv_impl == "auto":
        conv_impl = "matmul" if jax.default_backend() == "cpu" else "xla"
    conv = matmul_conv if conv_impl == "matmul" else lax.conv_general_dilated

    @functools.wraps(conv)  # `select_conv(...).__wrapped__` is the implementation.
    def named_conv(*args, **kwargs) -> jax.Array:
        """`conv`, its output named `CONV_OUTPUT` for rematerialisation policies."""
        return checkpoint_name(conv(*args, **kwargs), CONV_OUTPUT)

    return named_conv
