"""Convolution implementations pluggable into `nn.Conv(conv_general_dilated=...)`.

XLA's CPU convolutions are slow (several times slower than one big matrix multiply on the
machines we test on). Two replacements built from matrix multiplies:

- `matmul_conv`: each convolution as a single matmul over the kh*kw shifted copies of the
  padded input (im2col);
- `winograd_conv`: each 3x3 stride-1 "same" convolution by Winograd's minimal filtering
  F(2x2, 3x3) (Lavin & Gray, CVPR 2016): 16 matmuls over transformed 4x4 input tiles, 2.25x
  fewer multiply-adds than im2col, exact up to float rounding. Other convolutions, and those
  with fewer than 64 input channels, go to `matmul_conv`.

Every implementation keeps the kernel's [kh, kw, C_in, C_out] shape and name, so checkpoints
are interchangeable between them.
"""

import functools
from collections.abc import Sequence
from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

ConvImpl = Literal["auto", "xla", "matmul", "winograd"]
CONV_IMPLS: tuple[str, ...] = get_args(ConvImpl)  # For `ltpa_jax.validation`.
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
    simple = _unit_stride_nhwc(
        lhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count
    )
    if not simple or (isinstance(padding, str) and padding != "VALID"):
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


# Winograd F(2x2, 3x3): output tile Y = AT [(G g G^T) * (BT d BT^T)] AT^T for each 4x4 input
# tile d (stride 2) and 3x3 kernel g.
_WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))
MIN_WINOGRAD_CHANNELS = 64
"""Below this many input channels `winograd_conv` uses `matmul_conv`: on 2 CPU cores the two
run a 64-channel layer equally fast, Winograd compiles slower, and a short im2col row (27
numbers for RGB) feeds one matmul better than 16 matmuls of 3 channels."""


def winograd_conv(
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
    """3x3 "same" convolution by Winograd F(2x2, 3x3); same signature as lax's.

    Computes NHWC inputs [B, H, W, C_in] with HWIO kernels [3, 3, C_in, C_out], unit strides
    and dilations, one feature group, padding ((1, 1), (1, 1)) and C_in >= 64; anything else
    goes to `matmul_conv`. Odd H or W are padded by one zero row/column and cropped.

    Returns:
      [B, H, W, C_out].
    """
    args = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count)
    if not (
        _unit_stride_nhwc(lhs, window_strides, *args)
        and rhs.shape[:2] == (3, 3)
        and rhs.shape[2] >= MIN_WINOGRAD_CHANNELS
        and not isinstance(padding, str)
        and tuple(map(tuple, padding)) == ((1, 1), (1, 1))
    ):
        return matmul_conv(
            lhs, rhs, window_strides, padding, *args, precision, preferred_element_type
        )
    b, h, w, c_in = lhs.shape
    c_out = rhs.shape[-1]
    tiles_h, tiles_w = (h + 1) // 2, (w + 1) // 2
    padded = jnp.pad(lhs, ((0, 0), (1, 1 + h % 2), (1, 1 + w % 2), (0, 0)))
    # V[4i + j] = (BT d BT^T)[i, j] for every tile d, separably: rows first, then columns.
    tile_rows = [padded[:, r : r + 2 * tiles_h - 1 : 2] for r in range(4)]  # [B, th, W+2, C]
    row_sums = [_combine(coefs, tile_rows) for coefs in _WINOGRAD_BT]
    v = []
    for rows in row_sums:
        tile_cols = [rows[:, :, k : k + 2 * tiles_w - 1 : 2] for k in range(4)]  # [B, th, tw, C]
        v.extend(_combine(coefs, tile_cols) for coefs in _WINOGRAD_BT)
    v = jnp.stack(v).reshape(16, b * tiles_h * tiles_w, c_in)
    g = jnp.asarray(_WINOGRAD_G, rhs.dtype)
    u = jnp.einsum("ia,abco,jb->ijco", g, rhs, g).reshape(16, c_in, c_out)
    m = jnp.einsum(
        "tnc,tco->tno",
        v,
        u,
        precision=precision,
        preferred_element_type=preferred_element_type,
    ).reshape(4, 4, b, tiles_h, tiles_w, c_out)
    # Y = AT M AT^T, then the 2x2 output tiles interleaved back into [B, H, W, C_out].
    m_rows = [_combine(coefs, list(m)) for coefs in _WINOGRAD_AT]  # [4, B, th, tw, C_out]
    y = [jnp.stack([_combine(coefs, list(r)) for coefs in _WINOGRAD_AT], axis=3) for r in m_rows]
    y = jnp.stack(y, axis=2).reshape(b, 2 * tiles_h, 2 * tiles_w, c_out)
    return y[:, :h, :w]


def _combine(coefs: Sequence[float], terms: Sequence[jax.Array]) -> jax.Array:
    """sum_k coefs[k] * terms[k], skipping zero coefficients and multiplying by none of +-1."""
    total = None
    for coef, term in zip(coefs, terms, strict=True):
        if coef == 0:
            continue
        term = term if coef == 1 else -term if coef == -1 else coef * term
        total = term if total is None else total + term
    return total


def _unit_stride_nhwc(
    lhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count
) -> bool:
    """Whether a convolution is the plain kind both our implementations compute."""
    return (
        lhs.ndim == 4
        and tuple(window_strides) == (1, 1)
        and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
        and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
        and feature_group_count == 1
        and (dimension_numbers is None or _is_nhwc(dimension_numbers))
    )


def _is_nhwc(dimension_numbers) -> bool:
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers(
            (1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC")
        )
    return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


_CONVS = {"xla": lax.conv_general_dilated, "matmul": matmul_conv, "winograd": winograd_conv}


def select_conv(conv_impl: ConvImpl):
    """The convolution function for `conv_impl` ("auto": winograd on CPU, XLA elsewhere).

    Its output is named `CONV_OUTPUT` (for `models.remat`); `.__wrapped__` is the function that
    computes it: `winograd_conv`, `matmul_conv` or `lax.conv_general_dilated`.

    Raises:
      KeyError: a `conv_impl` outside `ConvImpl` (configs are validated before this is called).
    """
    if conv_impl == "auto":
        conv_impl = "winograd" if jax.default_backend() == "cpu" else "xla"
    conv = _CONVS[conv_impl]

    @functools.wraps(conv)  # `select_conv(...).__wrapped__` is the implementation.
    def named_conv(*args, **kwargs) -> jax.Array:
        """`conv`, its output named `CONV_OUTPUT` for rematerialisation policies."""
        return checkpoint_name(conv(*args, **kwargs), CONV_OUTPUT)

    return named_conv
