r"""CIFAR-100, (VGG-att3)-indep-pc: one classifier per attended descriptor, official combination.

The `indep` head as the official code builds it (`*_pred-ensemble` model folders): one
classifier per g_a, the per-level predictions summed (spec section 3). Preset:
`model.preset="official"`, recipe: the official VGG recipe (`official_recipe` in
cifar100_vgg_att3_concat_pc_official.py, whose docstring lists the deliberate differences).
No published number is quoted: spec section 7 has none for indep, and the official scripts
record no test accuracy for a 3-level indep run.

    ltpa-train --config=configs/cifar100_vgg_att3_indep_pc.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_att3_indep_pc
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.head = "indep"
    return c
