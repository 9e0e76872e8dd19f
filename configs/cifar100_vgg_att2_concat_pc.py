"""CIFAR-100, (VGG-att2)-concat-pc: attention at L2 and L3 only. Official runs: 23.17% error.

    ltpa-train --config=configs/cifar100_vgg_att2_concat_pc.py \\
        --workdir=/tmp/ltpa/cifar100_vgg_att2_concat_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.model.num_taps = 2
    return c
