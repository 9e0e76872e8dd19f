"""CIFAR-10, (VGG-att3)-concat-pc. Official runs: 6.45% error.

    ltpa-train --config=configs/cifar10_vgg_att3_concat_pc.py \\
        --workdir=/tmp/ltpa/cifar10_vgg_att3_concat_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "cifar10"
    c.model.num_classes = 10
    return c
