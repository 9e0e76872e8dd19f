"""CIFAR-100, (VGG-att3)-concat-pc, the paper's main model (reference recipe, 300 epochs).

Paper: 22.97% top-1 error; official runs 22.98%; reference 22.62% (spec section 7).

    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc.py \\
        --workdir=/tmp/ltpa/cifar100_vgg_att3_concat_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "cifar100"
    return c
