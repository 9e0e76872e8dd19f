"""CIFAR-10, (VGG-att2)-concat-pc. Official runs: 5.42% error.

    ltpa-train --config=configs/cifar10_vgg_att2_concat_pc.py \\
        --workdir=/tmp/ltpa/cifar10_vgg_att2_concat_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 2
    return c
