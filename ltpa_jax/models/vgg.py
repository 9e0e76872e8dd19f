"""The paper's VGG for 32x32 (and larger square) inputs, with optional LTPA attention taps.

Layer numbering follows `ltpa-spec.md` section 1: conv1-conv13 in five stages (the first two
VGG max-pools removed), conv14-conv15 each followed by a max-pool, then the global feature g,
a convolution whose kernel covers the remaining input_size/32 square (1x1 for CIFAR, 7x7 at
224x224). The taps L1, L2, L3 are conv7, conv10, conv13, before (paper) or after the max-pool
that follows them. Their attention maps are named "att1", "att2", "att3".

`preset` (`ltpa_jax.presets`) says whose network it is:

* "reference" (SaoYan/LearnToPayAttention, model1.py/model2.py): conv-BN(eps 1e-5)-ReLU
  without dropout, g a convolution with bias, the classifier on the raw g_a; convs and
  linears Xavier-uniform with gain sqrt(2), zero biases, BN gamma from U(0, 1).
* "official" (the Lua code, `VGGNet/models/models_CIFARS/3_level_atten_1global/*.lua` and
  `2_level_atten_1global/*.lua`): conv-BN(eps 1e-3)-ReLU followed by dropout 0.3 (conv1) or
  0.4 (conv3, conv5, conv6, conv8, conv9, conv11, conv12, conv14, conv15; `OFFICIAL_DROPOUT`),
  never on a tapped layer; g = Linear(512, 512) after Dropout(0.5) (`3_vgg_global.lua`: a
  convolution here, identical at 32x32 where the map is 1x1, and its kernel adapts to larger
  inputs as the reference's does); convs He-normal over the fan-out with zero bias
  (`MSRinit`), linears Torch's default, BN gamma from U(0, 1); the head puts each g_a through
  BatchNorm1d-ReLU-Dropout(0.5) (`vgg_match.lua`). The official *plain* VGG is another network,
  `vgg_bn_drop.lua` (cifar.torch): conv1-conv13 with a max-pool after every stage (no
  conv14/conv15, no global convolution), then Dropout(0.5), Linear(512, 512) "fc",
  BatchNorm1d "fc_bn", ReLU, Dropout(0.5), Linear(512, classes) "classifier".

Deliberate differences from the official code: its hand-written backward pass averages the
gradients where paths join (spec section 6); autodiff sums them. Its batch norms keep the
unbiased variance as running statistic, flax the biased one (a factor n / (n - 1) on the
running variance, n = B * H * W). The official CUB model's max-pool-and-upsample after conv7
(`models_CUBS200/3_level_atten_1global/1.1_vgg_local.lua`) is not built.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltpa_jax import presets
from ltpa_jax.models.conv import ConvImpl, select_conv
from ltpa_jax.models.heads import classifier, classify_with_attention
from ltpa_jax.models.local_attention import LocalSelfAttention
from ltpa_jax.models.remat import RematMode, remat_block
from ltpa_jax.models.se import SqueezeExcitation
from ltpa_jax.models.spec import AttentionSpec
from ltpa_jax.presets import Preset

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
# The official preset's dropout after conv-BN-ReLU n (the Lua `ConvBNReLU(...):add(nn.Dropout)`).
OFFICIAL_DROPOUT = {
    1: 0.3,
    3: 0.4,
    5: 0.4,
    6: 0.4,
    8: 0.4,
    9: 0.4,
    11: 0.4,
    12: 0.4,
    14: 0.4,
    15: 0.4,
}
OFFICIAL_GLOBAL_DROPOUT = 0.5  # Before the Linear that makes g (and before the plain VGG's fc).
OFFICIAL_DESCRIPTOR_DROPOUT = 0.5  # On each g_a (and before the plain VGG's classifier).


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier (at least 1)."""
    return max(1, round(channels * width))


class ConvBNReLU(nn.Module):
    """3x3 convolution (with bias), batch norm, ReLU, and dropout where `dropout` > 0.

    The preset sets the initialisation and the batch-norm eps (reference: Xavier-uniform gain
    sqrt(2), eps 1e-5; official: He-normal over the fan-out, eps 1e-3; both: zero bias, BN
    gamma from U(0, 1)). Dropout is active only with `train`.
    """

    features: int
    batch_norm: bool = True
    dtype: jnp.dtype = jnp.float32
    conv_impl: ConvImpl = "auto"
    preset: Preset = "reference"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """[B, H, W, C_in] -> [B, H, W, features]."""
        x = nn.Conv(
            self.features,
            (3, 3),
            padding=1,
            dtype=self.dtype,
            kernel_init=presets.conv_kernel_init(self.preset),
            conv_general_dilated=select_conv(self.conv_impl),
        )(x)
        if self.batch_norm:
            official = self.preset == "official"
            epsilon = presets.OFFICIAL_CONV_BN_EPSILON if official else presets.REFERENCE_BN_EPSILON
            x = presets.batch_norm(train, self.dtype, epsilon=epsilon)(x)
        x = nn.relu(x)
        if self.dropout:
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return x


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
      preset: "reference" or "official" (see the module docstring).
      conv_impl: "auto", "xla", "matmul" or "winograd" (see models/conv.py); same parameters.
      remat: "none", "full" or "keep_conv" rematerialisation of each conv block (see
        models/remat.py); parameters are the same.
      dtype: computation dtype (parameters are float32).
      squeeze_excitation: 0 (off) or the ratio r of a squeeze-and-excitation block after each
        layer of the five stages, named "<layer>_se" (models/se.py).
      self_attention_kernel: 0 (off) or the extent k of the local self-attention layers that
        replace conv11-conv13 (stage 5), named "self_attention11"-"self_attention13"
        (models/local_attention.py).
      self_attention_heads: their number of heads.
    """

    num_classes: int
    width: float = 1.0
    attention: AttentionSpec = AttentionSpec()
    batch_norm: bool = True
    preset: Preset = "reference"
    conv_impl: ConvImpl = "auto"
    remat: RematMode = "none"
    dtype: jnp.dtype = jnp.float32
    squeeze_excitation: int = 0
    self_attention_kernel: int = 0
    self_attention_heads: int = 8

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Names of the attention taps this network has, in network order."""
        return self.attention.tap_names(TAP_NAMES)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Classifies images; attention maps are sown into the "attention" collection.

        Args:
          images: [B, S, S, 3], S a multiple of 32.
          train: batch norm in training mode (batch statistics, updates running averages) and
            dropout on (official preset; its randomness from the "dropout" rng).

        Returns:
          logits, [B, num_classes] float32. With `mutable=["attention"]`, the collection
          "attention" holds each tap's normalised map [B, H_t, W_t] under its tap name, and
          "descriptors" holds g [B, 512] under "global" (the official plain VGG: its fc
          features after BN-ReLU) and each tap's g_a under its name.
        """
        official = self.preset == "official"
        plain_official = official and not self.tap_names
        dropout = OFFICIAL_DROPOUT if official else {}
        x = images.astype(self.dtype)
        block = remat_block(ConvBNReLU, self.remat)
        conv_index = 0
        taps = {}
        for stage, (channels, tap) in enumerate(STAGES):
            for c in channels:
                conv_index += 1
                if self.self_attention_kernel and stage == len(STAGES) - 1:
                    name = f"self_attention{conv_index}"
                    x = remat_block(LocalSelfAttention, self.remat)(
                        scaled(c, self.width),
                        self.self_attention_kernel,
                        self.self_attention_heads,
                        self.batch_norm,
                        True,
                        self.dtype,
                        name=name,
                    )(x, train)
                else:
                    name = f"conv{conv_index}"
                    x = block(
                        scaled(c, self.width),
                        self.batch_norm,
                        self.dtype,
                        self.conv_impl,
                        preset=self.preset,
                        dropout=dropout.get(conv_index, 0.0),
                        name=name,
                    )(x, train)
                if self.squeeze_excitation:
                    x = SqueezeExcitation(self.squeeze_excitation, self.dtype, name=f"{name}_se")(x)
            if tap is None:
                if plain_official:  # vgg_bn_drop.lua pools after every stage.
                    x = max_pool(x)
                continue
            pooled = max_pool(x)
            if tap in self.tap_names:
                taps[tap] = x if self.attention.tap_position == "before" else pooled
            x = pooled
        if plain_official:
            return self._official_plain_classifier(x, train)
        for _ in range(2):
            conv_index += 1
            x = block(
                scaled(512, self.width),
                self.batch_norm,
                self.dtype,
                self.conv_impl,
                preset=self.preset,
                dropout=dropout.get(conv_index, 0.0),
                name=f"conv{conv_index}",
            )(x, train)
            x = max_pool(x)
        if official:
            x = nn.Dropout(OFFICIAL_GLOBAL_DROPOUT)(x, deterministic=not train)
        fan_in = x.shape[1] * x.shape[2] * x.shape[3]
        g = nn.Conv(
            scaled(GLOBAL_WIDTH, self.width),
            x.shape[1:3],
            padding="VALID",
            dtype=self.dtype,
            kernel_init=presets.dense_kernel_init(self.preset),
            bias_init=presets.dense_bias_init(self.preset, fan_in),
            conv_general_dilated=select_conv(self.conv_impl),
            name="global_feature",
        )(x)
        g = g.reshape(g.shape[0], -1)
        self.sow("descriptors", "global", g.astype(jnp.float32))
        if not taps:
            return classifier(self.num_classes, self.dtype, "classifier", self.preset, g.shape[-1])(
                g
            ).astype(jnp.float32)
        return classify_with_attention(
            self,
            taps,
            g,
            num_classes=self.num_classes,
            attention=self.attention,
            dtype=self.dtype,
            preset=self.preset,
            train=train,
            descriptor_dropout=OFFICIAL_DESCRIPTOR_DROPOUT,
        )

    def _official_plain_classifier(self, x: jax.Array, train: bool) -> jax.Array:
        """vgg_bn_drop.lua's classifier on the conv13 map [B, S/32, S/32, 512] (1x1 at 32x32):
        Dropout(0.5), Linear 512, BatchNorm1d, ReLU, Dropout(0.5), Linear(512, classes)."""
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(OFFICIAL_GLOBAL_DROPOUT)(x, deterministic=not train)
        width = scaled(GLOBAL_WIDTH, self.width)
        x = presets.dense(width, x.shape[-1], self.preset, self.dtype, name="fc")(x)
        x = nn.relu(presets.batch_norm(train, self.dtype, name="fc_bn")(x))
        self.sow("descriptors", "global", x.astype(jnp.float32))
        x = nn.Dropout(OFFICIAL_DESCRIPTOR_DROPOUT)(x, deterministic=not train)
        logits = classifier(self.num_classes, self.dtype, "classifier", self.preset, width)(x)
        return logits.astype(jnp.float32)
