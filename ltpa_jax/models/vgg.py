"""The paper's VGG for 32x32 (and larger square) inputs, with optional LTPA attention taps.

Layer numbering follows `ltpa-spec.md` section 1: conv1-conv13 in five stages (the first two
VGG max-pools removed), conv14-conv15 each followed by a max-pool, then the global feature g,
a convolution whose kernel covers the remaining input_size/32 square (1x1 for CIFAR, 7x7 at
224x224). The taps L1, L2, L3 are conv7, conv10, conv13, before (paper) or after the max-pool
that follows them. Their attention maps are named "att1", "att2", "att3".
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltpa_jax.models.conv import ConvImpl, select_conv
from ltpa_jax.models.heads import classifier, classify_with_attention, kernel_init
from ltpa_jax.models.remat import RematMode, remat_block
from ltpa_jax.models.spec import AttentionSpec

# (output channels of each conv, tap name at the end of the stage or None), per stage.
STAGES = (
    ((64, 64), None),
    ((128, 128), None),
    ((256, 256, 256), "att1"),
    ((512, 512, 512), "att2"),
    ((512, 512, 512), "att3"),
)
TAP_NAMES = ("att1", "att2", "att3")
GLOBAL_WIDTH = 512


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier (at least 1)."""
    return max(1, round(channels * width))


class ConvBNReLU(nn.Module):
    """3x3 convolution (with bias), batch norm, ReLU."""

    features: int
    batch_norm: bool = True
    dtype: jnp.dtype = jnp.float32
    conv_impl: ConvImpl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """[B, H, W, C_in] -> [B, H, W, features]."""
        x = nn.Conv(
            self.features,
            (3, 3),
            padding=1,
            dtype=self.dtype,
            kernel_init=kernel_init,
            conv_general_dilated=select_conv(self.conv_impl),
        )(x)
        if self.batch_norm:
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
            )(x)
        return nn.relu(x)


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2, [B, H, W, C] -> [B, H/2, W/2, C]."""
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class VGGAtt(nn.Module):
    """VGG with 0-3 LTPA attention taps (0 = the plain VGG baseline).

    Attributes:
      num_classes: classifier outputs.
      width: channel multiplier (1.0 = the paper's network).
      attention: the attention hyper-parameters (`AttentionSpec`): `num_taps` of the taps
        (att1, att2, att3), the last n (0 = the plain VGG), their `tap_position` "before" or
        "after" the max-pool that follows each, and the head; `projection` matches att1 (256
        channels) to g (512).
      batch_norm: batch norm after each conv.
      conv_impl: "auto", "xla", "matmul" or "winograd" (see models/conv.py); same parameters.
      remat: "none", "full" or "keep_conv" rematerialisation of each conv block (see
        models/remat.py); parameters are the same.
      dtype: computation dtype (parameters are float32).
    """

    num_classes: int
    width: float = 1.0
    attention: AttentionSpec = AttentionSpec()
    batch_norm: bool = True
    conv_impl: ConvImpl = "auto"
    remat: RematMode = "none"
    dtype: jnp.dtype = jnp.float32

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Names of the attention taps this network has, in network order."""
        return self.attention.tap_names(TAP_NAMES)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Classifies images; attention maps are sown into the "attention" collection.

        Args:
          images: [B, S, S, 3], S a multiple of 32.
          train: batch norm in training mode (batch statistics, updates running averages).

        Returns:
          logits, [B, num_classes] float32. With `mutable=["attention"]`, the collection
          "attention" holds each tap's normalised map [B, H_t, W_t] under its tap name, and
          "descriptors" holds g [B, 512] under "global" and each tap's g_a under its name.
        """
        x = images.astype(self.dtype)
        block = remat_block(ConvBNReLU, self.remat)
        conv_index = 0
        taps = {}
        for channels, tap in STAGES:
            for c in channels:
                conv_index += 1
                x = block(
                    scaled(c, self.width),
                    self.batch_norm,
                    self.dtype,
                    self.conv_impl,
                    name=f"conv{conv_index}",
                )(x, train)
            if tap is None:
                continue
            pooled = max_pool(x)
            if tap in self.tap_names:
                taps[tap] = x if self.attention.tap_position == "before" else pooled
            x = pooled
        for _ in range(2):
            conv_index += 1
            x = block(
                scaled(512, self.width),
                self.batch_norm,
                self.dtype,
                self.conv_impl,
                name=f"conv{conv_index}",
            )(x, train)
            x = max_pool(x)
        g = nn.Conv(
            scaled(GLOBAL_WIDTH, self.width),
            x.shape[1:3],
            padding="VALID",
            dtype=self.dtype,
            kernel_init=kernel_init,
            conv_general_dilated=select_conv(self.conv_impl),
            name="global_feature",
        )(x)
        g = g.reshape(g.shape[0], -1)
        self.sow("descriptors", "global", g.astype(jnp.float32))
        if not taps:
            return classifier(self.num_classes, self.dtype, "classifier")(g).astype(jnp.float32)
        return classify_with_attention(
            self, taps, g, num_classes=self.num_classes, attention=self.attention, dtype=self.dtype
        )
