"""CIFAR-10, the plain pre-activation ResNet-164 baseline: the official ResNet recipe.

As configs/cifar100_rn164.py, on CIFAR-10. Published for this network: 5.46% error on
CIFAR-10 (He et al. 2016, as listed in the official repository's RESNET/README.md), not a
run of the paper's code.

    ltpa-train --config=configs/cifar10_rn164.py --workdir=$HOME/ltpa/cifar10_rn164
"""

from ltpa_jax.configs import sibling

cifar10_rn_att2 = sibling(__file__, "cifar10_rn_att2")


def get_config():
    """Returns the config described in the module docstring."""
    c = cifar10_rn_att2.get_config()
    c.model.num_taps = 0
    return c
