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

from typing import Literal, assert_never, get_args

import flax.linen as nn
import jax

from ltpa_jax.models.conv import CONV_OUTPUT

RematMode = Literal["none", "full", "keep_conv"]
REMAT_MODES: tuple[str, ...] = get_args(RematMode)  # For `ltpa_jax.validation` and benchmarks.


def remat_block(block: type[nn.Module], mode: RematMode) -> type[nn.Module]:
    """`block` (a module called as `block(x, train)`) wrapped for `mode`; as is for "none"."""
    if mode == "none":
        return block
    if mode == "full":
        policy = None
    elif mode == "keep_conv":
        policy = jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT)
    else:
        assert_never(mode)
    # static_argnums counts `self` as 0: argument 2 is `train`, a Python bool.
    return nn.remat(block, static_argnums=(2,), policy=policy)
