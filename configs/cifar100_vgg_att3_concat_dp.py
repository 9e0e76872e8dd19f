r"""CIFAR-100, (VGG-att3)-concat-dp: dot-product compatibility <l, g>, official code only.

The dot product exists only in the official Lua code (`*_DPversion`, `*_1globalDP` model
folders; the reference has no such option), so this config takes the official preset and VGG
recipe (`official_recipe` in cifar100_vgg_att3_concat_pc_official.py, whose docstring lists
the deliberate differences). No published number is quoted: spec section 7 has none for it
and the official scripts record no test accuracy for a 3-level dp run.

    ltpa-train --config=configs/cifar100_vgg_att3_concat_dp.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_att3_concat_dp
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.compatibility = "dp"
    return c
