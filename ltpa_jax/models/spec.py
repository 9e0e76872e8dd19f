"""The attention hyper-parameters of a network, as one frozen spec.

`AttentionSpec` is built once from the config's model section (`AttentionSpec.from_config`) and
handed to the backbone (`VGGAtt`, `PreActResNetAtt`), which passes it on to its `AttentionHead`.
Its fields are typed with the choices they allow; `ltpa_jax.validation` checks a config against
them, so the modules that read a spec trust it.
"""

import dataclasses
from typing import Literal, get_args

import ml_collections

from ltpa_jax.attention import Compatibility, Normalization, Projection

Head = Literal["concat", "indep"]
TapPosition = Literal["before", "after"]
HEADS: tuple[str, ...] = get_args(Head)
TAP_POSITIONS: tuple[str, ...] = get_args(TapPosition)


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """Where a network attends and how (the model section's attention fields).

    Attributes:
      num_taps: number of attention taps, the last n of the backbone's tap names (VGG: att1-att3,
        ResNet: att1-att2); 0 = no attention (the plain backbone).
      compatibility: "pc" (<u, l + g>, learns u) or "dp" (<l, g>).
      normalization: "softmax" over the positions of a map, or element-wise "sigmoid".
      tap_position: "before" (paper) or "after" the max-pool that follows a VGG tap (the ResNet
        has no such max-pool: "before" only).
      projection: how a tap whose width differs from g's is matched to it: "up" (1x1 conv of the
        local features to g's width) or "down" (g mapped to the tap's width).
      head: "concat" (one classifier on the concatenated g_a) or "indep" (one per g_a, their
        predictions summed as the official code does: log-softmax outputs for one or two
        taps, raw logits for three; `heads.combine_indep`).
    """

    num_taps: int = 3
    compatibility: Compatibility = "pc"
    normalization: Normalization = "softmax"
    tap_position: TapPosition = "before"
    projection: Projection = "up"
    head: Head = "concat"

    @classmethod
    def from_config(cls, model_config: ml_collections.ConfigDict) -> "AttentionSpec":
        """The spec of a (validated) model section: its fields of the same names."""
        return cls(**{field.name: model_config[field.name] for field in dataclasses.fields(cls)})

    def tap_names(self, backbone_taps: tuple[str, ...]) -> tuple[str, ...]:
        """The last `num_taps` of a backbone's tap names, in network order (0 -> none)."""
        return backbone_taps[len(backbone_taps) - self.num_taps :] if self.num_taps else ()
