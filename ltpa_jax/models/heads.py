"""Classifier heads: the plain global-feature classifier and the LTPA attention heads."""

from typing import assert_never

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltpa_jax import presets
from ltpa_jax.attention import AttentionEstimator
from ltpa_jax.models.spec import AttentionSpec
from ltpa_jax.presets import Preset

# Xavier-uniform with gain sqrt(2), the reference implementation's init for convs and linears.
kernel_init = presets.xavier_uniform_gain_sqrt2


class AttentionHead(nn.Module):
    """LTPA head: one attention estimator per tap, then a classifier on the descriptors g_a.

    Attributes:
      num_classes: classifier outputs.
      attention: the network's `AttentionSpec`; the head reads its `head` ("concat": one linear
        classifier on the concatenated g_a; "indep": one linear classifier per g_a, their
        predictions summed as the official code sums them: the per-level log-softmax outputs
        for one or two levels (`2_level_atten_1global_pred-ensemble/vgg_match.lua`), the raw
        logits for three (`3_level_atten_1global_pred-ensemble/vgg_match.lua`); the sum is
        used as logits) and passes `compatibility`, `normalization` and `projection` to each
        `AttentionEstimator`.
      preset: "reference" (each g_a goes to the classifier as it is, Xavier-uniform gain
        sqrt(2), zero bias) or "official" (each g_a through BatchNorm1d-ReLU-Dropout first,
        Torch's default linear init; `vgg_match.lua`, `4_match_singleimagepred_indep.lua`).
        The reference has no `indep` head: both presets combine as the official code does.
      descriptor_dropout: the official dropout rate on each g_a (VGG 0.5, ResNet 0.3).
      dtype: computation dtype.
    """

    num_classes: int
    attention: AttentionSpec = AttentionSpec()
    preset: Preset = "reference"
    descriptor_dropout: float = 0.5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, taps: dict[str, jax.Array], global_: jax.Array, train: bool = False
    ) -> tuple[jax.Array, dict[str, dict[str, jax.Array]]]:
        """Applies the head.

        Args:
          taps: tap name -> local features [B, H_t, W_t, C_t], in network order.
          global_: global feature g, [B, C_g].
          train: batch norm on batch statistics and dropout on (official preset).

        Returns:
          logits [B, num_classes] (float32) and, per tap, the estimator's outputs
          ("descriptor" [B, C], "scores" [B, H_t, W_t], "attention" [B, H_t, W_t]).
        """
        spec = self.attention
        outputs = {
            name: AttentionEstimator(
                compatibility=spec.compatibility,
                normalization=spec.normalization,
                projection=spec.projection,
                preset=self.preset,
                dtype=self.dtype,
                name=f"estimator_{name}",
            )(local, global_, train=train)
            for name, local in taps.items()
        }
        descriptors = [out["descriptor"].astype(self.dtype) for out in outputs.values()]
        if self.preset == "official":
            descriptors = [
                nn.Dropout(self.descriptor_dropout)(
                    nn.relu(presets.batch_norm(train, self.dtype, name=f"descriptor_bn_{name}")(d)),
                    deterministic=not train,
                )
                for name, d in zip(taps, descriptors, strict=True)
            ]
        if spec.head == "concat":
            features = jnp.concatenate(descriptors, axis=-1)
            logits = classifier(
                self.num_classes, self.dtype, "classifier", self.preset, features.shape[-1]
            )(features)
            return logits.astype(jnp.float32), outputs
        if spec.head == "indep":
            per_level = [
                classifier(
                    self.num_classes, self.dtype, f"classifier_{name}", self.preset, d.shape[-1]
                )(d).astype(jnp.float32)
                for name, d in zip(taps, descriptors, strict=True)
            ]
            return combine_indep(per_level), outputs
        assert_never(spec.head)


def combine_indep(per_level: list[jax.Array]) -> jax.Array:
    """The official `indep` combination of per-level logits [B, K] into logits [B, K].

    Three levels: the sum of the raw logits (3_level_atten_1global_pred-ensemble/vgg_match.lua,
    `CAddTable` of the three `Linear` outputs). One or two levels: the sum of the per-level
    log-softmax outputs (2_level_atten_1global_pred-ensemble/vgg_match.lua, `CAddTable` of two
    `LogSoftMax`). The training loss (softmax cross-entropy) applies its own log-softmax on
    top, as the official `CrossEntropyCriterion` does.
    """
    if len(per_level) == 3:
        return sum(per_level[1:], per_level[0])
    log_probs = [jax.nn.log_softmax(z) for z in per_level]
    return sum(log_probs[1:], log_probs[0])


def classifier(
    num_classes: int,
    dtype: jnp.dtype,
    name: str,
    preset: Preset = "reference",
    fan_in: int | None = None,
) -> nn.Dense:
    """The linear classifier layer used by every head, initialised as the preset's source does
    (`fan_in`, its number of inputs, is needed for the official preset's Torch default)."""
    if preset == "official":
        return presets.dense(num_classes, fan_in, preset, dtype, name=name)
    return nn.Dense(num_classes, dtype=dtype, kernel_init=kernel_init, name=name)


def classify_with_attention(
    backbone: nn.Module,
    taps: dict[str, jax.Array],
    global_: jax.Array,
    *,
    num_classes: int,
    attention: AttentionSpec,
    dtype: jnp.dtype,
    preset: Preset = "reference",
    train: bool = False,
    descriptor_dropout: float = 0.5,
) -> jax.Array:
    """Runs an `AttentionHead` (named "head") in `backbone` and sows what it estimated.

    Call from inside a backbone's compact `__call__`.

    Args:
      backbone: the calling module: maps go to its "attention" collection, g_a to its
        "descriptors" collection, each under the tap name.
      taps: tap name -> local features [B, H_t, W_t, C_t], in network order.
      global_: global feature g, [B, C_g].
      num_classes: classifier outputs.
      attention: the network's attention spec.
      dtype: computation dtype.
      preset: "reference" or "official" (see `AttentionHead`).
      train: batch norm on batch statistics and dropout on (official preset).
      descriptor_dropout: the official dropout rate on each g_a.

    Returns:
      logits, [B, num_classes] float32.
    """
    logits, outputs = AttentionHead(
        num_classes=num_classes,
        attention=attention,
        preset=preset,
        descriptor_dropout=descriptor_dropout,
        dtype=dtype,
        name="head",
    )(taps, global_, train=train)
    for name, out in outputs.items():
        backbone.sow("attention", name, out["attention"])
        backbone.sow("descriptors", name, out["descriptor"])
    return logits
