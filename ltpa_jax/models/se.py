"""Squeeze-and-excitation (Hu et al. 2018): channel attention, as a pure function and a module.

A feature map x [B, H, W, C] is squeezed to its channel means z = mean_{h,w} x [B, C], excited
through a bottleneck of C / r channels, ``s = sigmoid(W2 relu(W1 z + b1) + b2)`` [B, C], and
rescaled channel by channel: ``y = x * s``. The weights s say which channels the network
attends to for each image; they have no spatial extent (no map).

`SqueezeExcitation` holds W1, b1, W2, b2 (Dense layers named "reduce" and "expand") and sows s
into the "channel_weights" collection under "weights";
`ltpa_jax.inference.channel_weights(model, variables, images)` returns every block's s by its
module path. The backbones use it where
``config.model.squeeze_excitation`` (the ratio r) is > 0: after each conv-BN-ReLU of the VGG's
five stages (``conv1_se`` ... ``conv13_se``, as SE-VGG in the paper), and on the residual branch
of every ResNet bottleneck before the sum (``stage1_block1/se``, ..., as SE-ResNet).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

CHANNEL_WEIGHTS = "channel_weights"
"""The collection the blocks sow their weights s [B, C] into."""


def squeeze_excitation(
    x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Squeeze-and-excitation of a feature map, as a pure function.

    Args:
      x: features [B, H, W, C].
      w1, b1: the reduction [C, C_r] and its bias [C_r].
      w2, b2: the expansion [C_r, C] and its bias [C].

    Returns:
      (x * s [B, H, W, C], s [B, C]) with ``s = sigmoid(relu(mean_hw(x) @ w1 + b1) @ w2 + b2)``.
    """
    z = jnp.mean(x, axis=(1, 2))
    s = jax.nn.sigmoid(nn.relu(z @ w1 + b1) @ w2 + b2)
    return x * s[:, None, None, :], s


def reduced_channels(channels: int, ratio: int) -> int:
    """Bottleneck width C / r, at least 1 (narrow test networks)."""
    return max(1, channels // ratio)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation block, [B, H, W, C] -> [B, H, W, C]; sows s [B, C] (float32).

    Attributes:
      ratio: reduction ratio r (the bottleneck has C / r channels, at least 1); 16 in the paper.
      dtype: computation dtype.
    """

    ratio: int = 16
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        z = jnp.mean(x, axis=(1, 2))
        h = nn.relu(
            nn.Dense(reduced_channels(channels, self.ratio), dtype=self.dtype, name="reduce")(z)
        )
        s = jax.nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name="expand")(h))
        self.sow(CHANNEL_WEIGHTS, "weights", s.astype(jnp.float32))
        return x * s[:, None, None, :].astype(x.dtype)
