"""Pre-activation bottleneck ResNet for CIFAR-size inputs, plain or with LTPA attention (RN-att2).

The network of `ltpa-spec.md` section 5 (the official code's second backbone):

* a 3x3 stem convolution to 16 channels, then three stages of n = (depth - 2) / 9 bottleneck
  blocks each (depth 164: n = 18), bottleneck widths 16/32/64 expanded x4 to 64/128/256 output
  channels, at 32x32, 16x16 and 8x8 for a 32x32 input;
* each block is pre-activation (He et al. 2016): BN-ReLU-conv1x1, BN-ReLU-conv3x3,
  BN-ReLU-conv1x1 (x4), added to the shortcut; the shortcut is the identity, or a 1x1
  convolution of the pre-activated input where the shape changes (first block of each stage).
  The first block of stages 2 and 3 has stride 2, on its 3x3 convolution and its shortcut;
* convolutions have no bias (a batch norm follows each one, or the residual sum does).

Plain ResNet (`num_taps=0`): final BN-ReLU, global average pooling, linear classifier.

RN-att2 (`num_taps=2`): the local features are the outputs of stage 2 (128 channels, 16x16,
tap "att1") and stage 3 (256 channels, 8x8, tap "att2"), each after a BN-ReLU (the residual
stream of a pre-activation network is unnormalised; classifying convex combinations of it
directly made training at lr 0.1 collapse to chance on the digits demo). `num_taps=1` keeps
the stage-3 tap "att2" only (the last n taps, as for the VGG). The global feature g is a branch
on the activated stage-3 output: 2x2 max-pool, 3x3 conv-BN-ReLU 256, max-pool over the
remaining map (4x4 at 32x32 input), Linear(256, 256). With `projection="down"` (paper, official
code) the first estimator maps g down to 128 channels. The classifier is the shared
`AttentionHead`: "concat" is Linear(128 + 256, classes) on the attended descriptors.

Differences from the official code, kept on purpose:
* no dropout (the official g branch has 0.4 and 0.5, its classifier 0.3): the training loop has
  no dropout randomness;
* the descriptors go to the classifier as they are (the official code passes each through
  BN-ReLU first; `AttentionHead`, shared with the VGG, classifies g_a as the reference does);
  the BN-ReLU sits on the tapped features instead;
* convolutions have no bias, the g branch's included (a batch norm follows it).

These are the "reference" preset's choices (the reference has no ResNet: this is ours, with
the reference's initialisation: Xavier-uniform gain sqrt(2), zero biases, BN gamma U(0, 1)).
The "official" preset (`ltpa_jax.presets`) builds the official RN-att2 as its Lua files do
(`RESNET/models/Resnet-att2/*.lua`, trained by `train_attenunit_2levels.lua`):
* the stride of a stage's first block is on its first 1x1 convolution (and the shortcut),
  not on the 3x3;
* the taps are the raw stage outputs (no BN-ReLU on them);
* g (`2.3_resnet_global.lua`): BN-ReLU of the stage-3 output, max-pool 2, 3x3 conv with bias
  256, BN (eps 1e-3), ReLU, Dropout(0.4), max-pool 4, Dropout(0.5), Linear(256, 256);
* the att1 estimator maps g down through BatchNorm1d-ReLU-Dropout(0.5)-Linear(256, 128)
  (`3.2_atten.lua`); the score convolutions have a bias;
* the classifier (`4_match_singleimagepred_indep.lua`, a concat head despite its name) puts
  each g_a through BatchNorm1d-ReLU-Dropout(0.3), then Linear(384, classes);
* convolutions He-normal over the fan-out (`MSRinit`), linears Torch's default init, except
  the plain ResNet's classifier bias, zeroed by `FCinit` (`resnet-pre-act.lua`); BN gamma from
  U(0, 1); eps 1e-5 except the g convolution's 1e-3.
Still different from the official code, on purpose: autodiff sums the gradients where paths
join (its hand-written backward pass averages them); running variances are biased (flax).
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
from ltpa_jax.models.vgg import scaled
from ltpa_jax.presets import Preset

STAGE_WIDTHS = (16, 32, 64)  # Bottleneck widths; block outputs are EXPANSION times wider.
EXPANSION = 4
STEM_WIDTH = 16
GLOBAL_WIDTH = 256  # Width of g (spec section 5).
TAP_NAMES = ("att1", "att2")  # End of stage 2 and end of stage 3.
TAP_POSITIONS = ("before",)  # No max-pool follows a ResNet tap: only "before" exists.
OFFICIAL_GLOBAL_CONV_DROPOUT = 0.4  # 2.3_resnet_global.lua, after its conv-BN-ReLU.
OFFICIAL_GLOBAL_DROPOUT = 0.5  # 2.3_resnet_global.lua, before its Linear(256, 256).
OFFICIAL_DESCRIPTOR_DROPOUT = 0.3  # 4_match_singleimagepred_indep.lua, on each g_a.


def is_valid_depth(depth: int) -> bool:
    """Whether depth = 9n + 2 with n >= 1 (for `ltpa_jax.validation`)."""
    return depth >= 11 and (depth - 2) % 9 == 0


def blocks_per_stage(depth: int) -> int:
    """n for depth = 9n + 2 (three stages of n bottlenecks of 3 layers, plus stem and classifier).

    The depth is one that `is_valid_depth` accepts (the config validation checks it).
    """
    return (depth - 2) // 9


def _batch_norm(
    train: bool, dtype: jnp.dtype, name: str | None = None, epsilon: float = 1e-5
) -> nn.BatchNorm:
    return presets.batch_norm(train, dtype, epsilon=epsilon, name=name)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block, [B, H, W, C_in] -> [B, H/stride, W/stride, 4 * width].

    Attributes:
      width: bottleneck width (the block outputs `EXPANSION * width` channels).
      stride: 1, or 2 to halve the resolution (on the shortcut and, "reference", the 3x3
        convolution or, "official", the first 1x1 convolution).
      conv_impl: "auto", "xla", "matmul" or "winograd" (see models/conv.py).
      dtype: computation dtype.
      squeeze_excitation: 0 (off) or the ratio r of a squeeze-and-excitation block ("se") on
        the residual branch before the sum (models/se.py).
      self_attention_kernel: 0 (off) or the extent k of a local self-attention layer
        ("self_attention", models/local_attention.py) in place of the 3x3 convolution, followed
        by 2x2 average pooling where stride is 2.
      self_attention_heads: its number of heads.
      preset: "reference" or "official" (see the module docstring).
    """

    width: int
    stride: int = 1
    conv_impl: ConvImpl = "auto"
    dtype: jnp.dtype = jnp.float32
    squeeze_excitation: int = 0
    self_attention_kernel: int = 0
    self_attention_heads: int = 8
    preset: Preset = "reference"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Applies the block to x [B, H, W, C_in]."""
        conv = select_conv(self.conv_impl)
        out_channels = EXPANSION * self.width

        def conv_layer(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
            return nn.Conv(
                features,
                (kernel, kernel),
                strides=stride,
                padding=kernel // 2,
                use_bias=False,
                dtype=self.dtype,
                kernel_init=presets.conv_kernel_init(self.preset),
                conv_general_dilated=conv,
                name=name,
            )

        # The official puts the stride on the first 1x1 convolution, ours on the 3x3.
        stride_1x1, stride_3x3 = (self.stride, 1) if self.preset == "official" else (1, self.stride)
        preact = nn.relu(_batch_norm(train, self.dtype, "bn1")(x))
        if self.stride != 1 or x.shape[-1] != out_channels:
            shortcut = conv_layer(out_channels, 1, self.stride, "shortcut")(preact)
        else:
            shortcut = x
        y = conv_layer(self.width, 1, stride_1x1, "conv1")(preact)
        y = nn.relu(_batch_norm(train, self.dtype, "bn2")(y))
        if self.self_attention_kernel:
            y = LocalSelfAttention(
                self.width,
                self.self_attention_kernel,
                self.self_attention_heads,
                dtype=self.dtype,
                name="self_attention",
            )(y, train)
            if stride_3x3 != 1:
                y = nn.avg_pool(y, (stride_3x3, stride_3x3), strides=(stride_3x3, stride_3x3))
        else:
            y = conv_layer(self.width, 3, stride_3x3, "conv2")(y)
        y = nn.relu(_batch_norm(train, self.dtype, "bn3")(y))
        y = conv_layer(out_channels, 1, 1, "conv3")(y)
        if self.squeeze_excitation:
            y = SqueezeExcitation(self.squeeze_excitation, self.dtype, name="se")(y)
        return y + shortcut


class PreActResNetAtt(nn.Module):
    """Pre-activation bottleneck ResNet with 0-2 LTPA attention taps (0 = plain ResNet).

    Attributes:
      num_classes: classifier outputs.
      depth: 9n + 2 layers, n bottleneck blocks per stage (164 = the paper's ResNet-164).
      width: channel multiplier (1.0 = widths 16/32/64, x4 = 64/128/256).
      attention: the attention hyper-parameters (`AttentionSpec`): `num_taps` 0 (plain: BN-ReLU,
        global average pooling, linear), 1 ("att2", stage 3) or 2 ("att1" stage 2 and "att2"
        stage 3: RN-att2); `projection` "down" (paper: g mapped to the stage-2 width for
        "att1") or "up" (the stage-2 features projected up to the width of g); the head. Its
        `tap_position` is not read: a ResNet tap has no max-pool after it ("before" only).
      conv_impl: "auto", "xla", "matmul" or "winograd" (see models/conv.py); same parameters.
      remat: "none", "full" or "keep_conv" rematerialisation of each bottleneck (see
        models/remat.py); parameters are the same.
      dtype: computation dtype (parameters are float32).
      squeeze_excitation: 0 (off) or the ratio r of a squeeze-and-excitation block in every
        bottleneck (`PreActBottleneck`).
      self_attention_kernel: 0 (off) or the extent k of the local self-attention layers that
        replace the 3x3 convolutions of stage 3 (`PreActBottleneck`).
      self_attention_heads: their number of heads.
    """

    num_classes: int
    depth: int = 164
    width: float = 1.0
    attention: AttentionSpec = AttentionSpec(num_taps=2, projection="down")
    conv_impl: ConvImpl = "auto"
    remat: RematMode = "none"
    dtype: jnp.dtype = jnp.float32
    squeeze_excitation: int = 0
    self_attention_kernel: int = 0
    self_attention_heads: int = 8
    preset: Preset = "reference"

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Names of the attention taps this network has, in network order."""
        return self.attention.tap_names(TAP_NAMES)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Classifies images; attention maps are sown into the "attention" collection.

        Args:
          images: [B, S, S, 3], S a multiple of 4 (32 for CIFAR).
          train: batch norm in training mode (batch statistics, updates running averages) and
            dropout on (official preset; its randomness from the "dropout" rng).

        Returns:
          logits, [B, num_classes] float32. With `mutable=["attention"]`, the collection
          "attention" holds each tap's normalised map [B, H_t, W_t] under its tap name, and
          "descriptors" holds g under "global" (the pooled features for the plain ResNet) and
          each tap's g_a under its name.
        """
        official = self.preset == "official"
        conv = select_conv(self.conv_impl)
        n = blocks_per_stage(self.depth)
        x = nn.Conv(
            scaled(STEM_WIDTH, self.width),
            (3, 3),
            padding=1,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=presets.conv_kernel_init(self.preset),
            conv_general_dilated=conv,
            name="stem",
        )(images.astype(self.dtype))
        taps = {}
        for stage, stage_width in enumerate(STAGE_WIDTHS):
            for block in range(n):
                x = remat_block(PreActBottleneck, self.remat)(
                    scaled(stage_width, self.width),
                    stride=2 if stage > 0 and block == 0 else 1,
                    conv_impl=self.conv_impl,
                    dtype=self.dtype,
                    squeeze_excitation=self.squeeze_excitation,
                    self_attention_kernel=self.self_attention_kernel if stage == 2 else 0,
                    self_attention_heads=self.self_attention_heads,
                    preset=self.preset,
                    name=f"stage{stage + 1}_block{block + 1}",
                )(x, train)
            if stage == 1 and "att1" in self.tap_names:
                # Official: the raw stage-2 output. Ours: activated (BN-ReLU, as the next block
                # sees it).
                taps["att1"] = (
                    x if official else nn.relu(_batch_norm(train, self.dtype, "att1_bn")(x))
                )
        if not self.tap_names:
            x = nn.relu(_batch_norm(train, self.dtype, "final_bn")(x))
            pooled = jnp.mean(x, axis=(1, 2))
            self.sow("descriptors", "global", pooled.astype(jnp.float32))
            if official:  # resnet-pre-act.lua: Torch's default weight, FCinit zeroes the bias.
                head = nn.Dense(
                    self.num_classes,
                    dtype=self.dtype,
                    kernel_init=presets.torch_linear_kernel,
                    name="classifier",
                )
            else:
                head = classifier(self.num_classes, self.dtype, "classifier")
            return head(pooled).astype(jnp.float32)

        # The stage-3 output, activated (BN-ReLU): the input of g and, ours, the local features
        # of "att2" (official: the raw stage-3 output).
        activated = nn.relu(_batch_norm(train, self.dtype, "final_bn")(x))
        taps["att2"] = x if official else activated
        g = self._global_feature(activated, train)
        self.sow("descriptors", "global", g.astype(jnp.float32))
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

    def _global_feature(self, x: jax.Array, train: bool) -> jax.Array:
        """g from the activated stage-3 output [B, H, W, C]: [B, 256 * width] (spec section 5)."""
        official = self.preset == "official"
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(
            scaled(GLOBAL_WIDTH, self.width),
            (3, 3),
            padding=1,
            use_bias=official,  # 2.3_resnet_global.lua keeps the bias (MSRinit zeroes it).
            dtype=self.dtype,
            kernel_init=presets.conv_kernel_init(self.preset),
            conv_general_dilated=select_conv(self.conv_impl),
            name="global_conv",
        )(x)
        epsilon = presets.OFFICIAL_CONV_BN_EPSILON if official else presets.REFERENCE_BN_EPSILON
        x = nn.relu(_batch_norm(train, self.dtype, "global_bn", epsilon=epsilon)(x))
        if official:
            x = nn.Dropout(OFFICIAL_GLOBAL_CONV_DROPOUT)(x, deterministic=not train)
        x = jnp.max(x, axis=(1, 2))  # The max-pool 4 of the spec at 32x32 input (4x4 -> 1x1).
        if official:
            x = nn.Dropout(OFFICIAL_GLOBAL_DROPOUT)(x, deterministic=not train)
        return presets.dense(
            scaled(GLOBAL_WIDTH, self.width),
            x.shape[-1],
            self.preset,
            self.dtype,
            name="global_feature",
        )(x)
