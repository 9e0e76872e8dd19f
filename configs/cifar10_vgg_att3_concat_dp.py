"""CIFAR-10, (VGG-att3)-concat-dp.

    ltpa-train --config=configs/cifar10_vgg_att3_concat_dp.py \\
        --workdir=/tmp/ltpa/cifar10_vgg_att3_concat_dp
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.compatibility = "dp"
    return c
