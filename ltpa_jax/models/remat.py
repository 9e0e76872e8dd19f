"""Rematerialisation of the backbone's blocks: less activation memory for more compute.

With `config.remat`, each VGG conv block (conv-BN-ReLU) and each ResNet bottleneck runs under
`flax.linen.remat` (`jax.checkpoint`): the backward pass recomputes what the block would have
kept for it.

* "none": keep everything (fastest, most memory).
* "full": keep only each block's input; the whole block, convolutions included, runs again in
  the backward pass (least memory, about one more forward pass of compute).
* "keep_conv": keep the convolution outputs (tagged `CONV_OUTPUT` by `models.conv`) and
  recompute only batch norm and ReLU, which are cheap: the convolutions, where the FLOPs are,
  are not recomputed.
"""

import flax.linen as nn
import jax

from ltpa_jax.models.conv import CONV_OUTPUT

REMAT_MODES = ("none", "full", "keep_conv")


def remat_block(block: type[nn.Module], mode: str) -> type[nn.Module]:
    """`block` (a module called as `block(x, train)`) wrapped for `mode`; as is for "none"."""
    if mode not in REMAT_MODES:
        raise ValueError(f"config.remat={mode!r} is not valid; use one of {REMAT_MODES}.")
    if mode == "none":
        return block
    policy = None if mode == "full" else jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT)
    # static_argnums counts `self` as 0: argument 2 is `train`, a Python bool.
    return nn.remat(block, static_argnums=(2,), policy=policy)
