"""CIFAR-100, the plain VGG baseline (no attention). Paper: 30.62% error.

ltpa-train --config=configs/cifar100_vgg.py --workdir=/tmp/ltpa/cifar100_vgg
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.model.num_taps = 0
    return c
