"""Classifier heads: the plain global-feature classifier and the LTPA attention heads."""

from typing import assert_never

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltpa_jax.attention import AttentionEstimator
from ltpa_jax.models.spec import AttentionSpec

# Xavier-uniform with gain sqrt(2), the reference implementation's init for convs and linears.
kernel_init = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")


class AttentionHead(nn.Module):
    """LTPA head: one attention estimator per tap, then a classifier on the descriptors g_a.

    Attributes:
      num_classes: classifier outputs.
      attention: the network's `AttentionSpec`; the head reads its `head` ("concat": one linear
        classifier on the concatenated g_a; "indep": one linear classifier per g_a, whose
        log-softmax outputs are averaged, so the result is a valid log-probability up to a
        constant and can be used as logits) and passes `compatibility`, `normalization` and
        `projection` to each `AttentionEstimator`.
      dtype: computation dtype.
    """

    num_classes: int
    attention: AttentionSpec = AttentionSpec()
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, taps: dict[str, jax.Array], global_: jax.Array
    ) -> tuple[jax.Array, dict[str, dict[str, jax.Array]]]:
        """Applies the head.

        Args:
          taps: tap name -> local features [B, H_t, W_t, C_t], in network order.
          global_: global feature g, [B, C_g].

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
                dtype=self.dtype,
                name=f"estimator_{name}",
            )(local, global_)
            for name, local in taps.items()
        }
        descriptors = [out["descriptor"].astype(self.dtype) for out in outputs.values()]
        if spec.head == "concat":
            logits = classifier(self.num_classes, self.dtype, "classifier")(
                jnp.concatenate(descriptors, axis=-1)
            )
            return logits.astype(jnp.float32), outputs
        if spec.head == "indep":
            log_probs = [
                jax.nn.log_softmax(
                    classifier(self.num_classes, self.dtype, f"classifier_{name}")(d).astype(
                        jnp.float32
                    )
                )
                for name, d in zip(taps, descriptors, strict=True)
            ]
            return jnp.mean(jnp.stack(log_probs), axis=0), outputs
        assert_never(spec.head)


def classifier(num_classes: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    """The linear classifier layer used by every head."""
    return nn.Dense(num_classes, dtype=dtype, kernel_init=kernel_init, name=name)


def classify_with_attention(
    backbone: nn.Module,
    taps: dict[str, jax.Array],
    global_: jax.Array,
    *,
    num_classes: int,
    attention: AttentionSpec,
    dtype: jnp.dtype,
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

    Returns:
      logits, [B, num_classes] float32.
    """
    logits, outputs = AttentionHead(
        num_classes=num_classes, attention=attention, dtype=dtype, name="head"
    )(taps, global_)
    for name, out in outputs.items():
        backbone.sow("attention", name, out["attention"])
        backbone.sow("descriptors", name, out["descriptor"])
    return logits
