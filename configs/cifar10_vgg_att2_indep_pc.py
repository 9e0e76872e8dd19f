"""CIFAR-10, (VGG-att2)-indep-pc.

    ltpa-train --config=configs/cifar10_vgg_att2_indep_pc.py \\
        --workdir=/tmp/ltpa/cifar10_vgg_att2_indep_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 2
    c.model.head = "indep"
    return c
