"""CIFAR-100, (VGG-att3)-concat-pc with taps after max-pooling (reference: 22.92% error).

    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc_after.py \\
        --workdir=/tmp/ltpa/cifar100_vgg_att3_concat_pc_after
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.model.tap_position = "after"
    return c
