"""CIFAR-100, (VGG-att3)-indep-pc: one classifier per attended descriptor, log-probs averaged.

    ltpa-train --config=configs/cifar100_vgg_att3_indep_pc.py \\
        --workdir=/tmp/ltpa/cifar100_vgg_att3_indep_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.model.head = "indep"
    return c
