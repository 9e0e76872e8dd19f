"""CIFAR-100, (VGG-att3)-concat-dp: dot-product compatibility <l, g>, no parameters u.

    ltpa-train --config=configs/cifar100_vgg_att3_concat_dp.py \\
        --workdir=/tmp/ltpa/cifar100_vgg_att3_concat_dp
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.model.compatibility = "dp"
    return c
