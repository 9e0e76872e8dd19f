r"""CIFAR-10, (VGG-att3)-concat-dp: dot-product compatibility (official code only), no number.

The official code has dot-product variants (`*_DPversion`, `2_level_atten_1globalDP`); no test
accuracy of a 3-level dp run is recorded and spec section 7 has none. Preset:
`model.preset="official"`, recipe: the official VGG recipe (`official_recipe` in
cifar100_vgg_att3_concat_pc_official.py, whose docstring lists the deliberate differences).

    ltpa-train --config=configs/cifar10_vgg_att3_concat_dp.py \\
        --workdir=$HOME/ltpa/cifar10_vgg_att3_concat_dp
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 3
    c.model.compatibility = "dp"
    return c
