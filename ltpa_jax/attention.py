"""Attention estimators of *Learn To Pay Attention* as pure functions of arrays.

For one tap with local features l_i (i over the H*W positions, C channels) and the global
feature g of the network:

* compatibility scores c_i = <u, l_i + g> (`pc`) or <l_i, g> (`dp`);
* attention a = softmax(c) over the H*W positions, or sigmoid(c) element-wise;
* attended descriptor g_a = sum_i a_i l_i (softmax) or mean_i a_i l_i (sigmoid).

`AttentionEstimator` holds the parameters (u, and the projection when the widths of l and g
differ), laid out and initialised as the chosen preset's source does (`ltpa_jax.presets`),
and calls these functions.
"""

from typing import Literal, assert_never, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltpa_jax import presets

Compatibility = Literal["pc", "dp"]
Normalization = Literal["softmax", "sigmoid"]
Projection = Literal["up", "down"]
# The allowed values, for `ltpa_jax.validation`: the functions and modules here trust their
# arguments (a value outside its Literal is a programming error and fails an assertion).
COMPATIBILITIES: tuple[str, ...] = get_args(Compatibility)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
PROJECTIONS: tuple[str, ...] = get_args(Projection)


def compatibility_pc(local: jax.Array, global_: jax.Array, u: jax.Array) -> jax.Array:
    """Parametrised compatibility c_i = <u, l_i + g>.

    Args:
      local: local features l, [B, H, W, C].
      global_: global feature g, [B, C].
      u: learned weight vector, [C].

    Returns:
      Scores c, [B, H, W].
    """
    return jnp.einsum("bhwc,c->bhw", local + global_[:, None, None, :], u)


def compatibility_dp(local: jax.Array, global_: jax.Array) -> jax.Array:
    """Dot-product compatibility c_i = <l_i, g>.

    Args:
      local: local features l, [B, H, W, C].
      global_: global feature g, [B, C].

    Returns:
      Scores c, [B, H, W].
    """
    return jnp.einsum("bhwc,bc->bhw", local, global_)


def normalize_attention(scores: jax.Array, method: Normalization) -> jax.Array:
    """Normalises compatibility scores into an attention map.

    Args:
      scores: compatibility scores, [B, H, W].
      method: "softmax" over the H*W positions of each map (each map sums to 1), or
        "sigmoid", element-wise (values in (0, 1), maps need not sum to 1).

    Returns:
      Attention a, [B, H, W].
    """
    if method == "softmax":
        b, h, w = scores.shape
        return jax.nn.softmax(scores.reshape(b, h * w), axis=-1).reshape(b, h, w)
    if method == "sigmoid":
        return jax.nn.sigmoid(scores)
    assert_never(method)


def attend(local: jax.Array, attention: jax.Array, method: Normalization) -> jax.Array:
    """Attended descriptor g_a: the attention-weighted combination of the local features.

    For softmax the weights sum to 1, so g_a = sum_i a_i l_i is a convex combination of the
    l_i. Sigmoid weights do not sum to 1: their sum grows with H*W, so summing would make the
    scale of g_a depend on the tap's resolution and on how many positions fire. The reference
    implementation therefore takes the spatial *mean* of a_i l_i (global average pooling of the
    re-weighted map), which keeps g_a on the scale of the features; we do the same.

    Args:
      local: local features l, [B, H, W, C].
      attention: attention a from `normalize_attention`, [B, H, W].
      method: "softmax" (weighted sum) or "sigmoid" (weighted mean).

    Returns:
      g_a, [B, C].
    """
    weighted = jnp.einsum("bhwc,bhw->bc", local, attention)
    if method == "softmax":
        return weighted
    if method == "sigmoid":
        return weighted / (local.shape[1] * local.shape[2])
    assert_never(method)


class AttentionEstimator(nn.Module):
    """One LTPA attention estimator: scores a tap's local features against g.

    When the widths of the local features (C_l) and of g (C_g) differ, `projection` says how
    they are matched (spec section 2): "up" projects l to C_g with a 1x1 convolution (reference
    implementation; g_a is then computed over the projected features), "down" maps g to C_l
    with a learned linear layer (paper and official code).

    The `preset` says whose layers these are:

    * "reference" (SaoYan/LearnToPayAttention, blocks.py): the score 1x1 convolution C -> 1
      (`u`) and the up-projection have no bias; every weight is Xavier-uniform with gain
      sqrt(2) (its `weights_init_xavierUniform`). Its network has no down-projection; ours is a
      linear layer initialised the same way.
    * "official" (the Lua code, `3_level_atten_1global/1_vgg_atten.lua` and the
      `_upprojecting` variant): the score convolution has a bias; before the projection, g goes
      through BatchNorm1d-ReLU-Dropout(0.5) ("global_bn"), then a Linear C_g -> C_l (down,
      Torch's default init) or is added to the l projected by a 1x1 convolution with bias (up);
      convolutions are He-normal over the fan-out with zero bias (`MSRinit`; for `u`, whose
      fan-out is 1, std sqrt(2)). A tap whose width equals g's uses g as it is.

    Attributes:
      compatibility: "pc" (parametrised, learns u) or "dp" (dot product, no parameters).
      normalization: "softmax" or "sigmoid".
      projection: "up" or "down", used only when C_l != C_g.
      preset: "reference" or "official".
      dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    """

    compatibility: Compatibility = "pc"
    normalization: Normalization = "softmax"
    projection: Projection = "up"
    preset: presets.Preset = "reference"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, local: jax.Array, global_: jax.Array, train: bool = False
    ) -> dict[str, jax.Array]:
        """Estimates attention for one tap.

        Args:
          local: local features, [B, H, W, C_l].
          global_: global feature g, [B, C_g].
          train: batch norm on batch statistics and dropout on (official preset only).

        Returns:
          A dict with "descriptor" g_a [B, C] (C = C_g for "up", C_l for "down"),
          "scores" c [B, H, W] and "attention" a [B, H, W] (float32).
        """
        official = self.preset == "official"
        conv_init = presets.conv_kernel_init(self.preset)
        c_local, c_global = local.shape[-1], global_.shape[-1]
        if c_local != c_global:
            if official:
                global_ = presets.batch_norm(train, self.dtype, name="global_bn")(global_)
                global_ = nn.Dropout(0.5)(nn.relu(global_), deterministic=not train)
            if self.projection == "up":
                local = nn.Conv(
                    c_global,
                    (1, 1),
                    use_bias=official,
                    dtype=self.dtype,
                    kernel_init=conv_init,
                    name="project_local",
                )(local)
            elif self.projection == "down":
                global_ = presets.dense(
                    c_local, c_global, self.preset, self.dtype, name="project_global"
                )(global_)
            else:
                assert_never(self.projection)
        if self.compatibility == "pc":
            u = self.param("u", conv_init, (local.shape[-1], 1))[:, 0]
            scores = compatibility_pc(local, global_, u.astype(local.dtype))
            if official:
                scores = scores + self.param("u_bias", nn.initializers.zeros, (1,))[0]
        elif self.compatibility == "dp":
            scores = compatibility_dp(local, global_)
        else:
            assert_never(self.compatibility)
        scores = scores.astype(jnp.float32)
        attention = normalize_attention(scores, self.normalization)
        descriptor = attend(local.astype(jnp.float32), attention, self.normalization)
        return {"descriptor": descriptor, "scores": scores, "attention": attention}
