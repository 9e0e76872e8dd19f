"""CIFAR-100, the plain pre-activation ResNet-164 baseline (global average pooling + linear
classifier, no attention), official ResNet recipe: see configs/cifar100_rn_att2.py.

    ltpa-train --config=configs/cifar100_rn164.py --workdir=/tmp/ltpa/cifar100_rn164
"""

from ltpa_jax.configs import sibling

cifar100_rn_att2 = sibling(__file__, "cifar100_rn_att2")


def get_config():
    """Returns the config described in the module docstring."""
    c = cifar100_rn_att2.get_config()
    c.model.num_taps = 0
    return c
