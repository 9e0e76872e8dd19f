"""SVHN (cropped digits), (VGG-att3)-concat-pc; crop augmentation without flips.

ltpa-train --config=configs/svhn_vgg_att3_concat_pc.py --workdir=/tmp/ltpa/svhn_vgg_att3_concat_pc
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "svhn_cropped"
    c.model.num_classes = 10
    c.shuffle_buffer = 80_000
    return c
