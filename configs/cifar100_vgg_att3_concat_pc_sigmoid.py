"""CIFAR-100, (VGG-att3)-concat-pc with sigmoid normalisation (reference option).

    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc_sigmoid.py \\
        --workdir=/tmp/ltpa/cifar100_vgg_att3_concat_pc_sigmoid
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.model.normalization = "sigmoid"
    return c
