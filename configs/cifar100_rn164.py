"""CIFAR-100, the plain pre-activation ResNet-164 baseline: the official ResNet recipe.

The network the official RN-att2 is built on (RESNET/models/resnet-pre-act.lua, depth 164:
BN-ReLU, global average pooling, one linear classifier; no attention) with the recipe of
configs/cifar100_rn_att2.py (whose docstring lists the source and the deliberate
differences). Published for this network: 24.33% error on CIFAR-100 (He et al. 2016, as
listed in the official repository's RESNET/README.md), not a run of the paper's code.

    ltpa-train --config=configs/cifar100_rn164.py --workdir=$HOME/ltpa/cifar100_rn164
"""

from ltpa_jax.configs import sibling

cifar100_rn_att2 = sibling(__file__, "cifar100_rn_att2")


def get_config():
    """Returns the config described in the module docstring."""
    c = cifar100_rn_att2.get_config()
    c.model.num_taps = 0
    return c
