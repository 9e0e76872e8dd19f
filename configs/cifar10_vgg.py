"""CIFAR-10, the plain VGG baseline. Official runs: 7.70% error.

ltpa-train --config=configs/cifar10_vgg.py --workdir=/tmp/ltpa/cifar10_vgg
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 0
    return c
