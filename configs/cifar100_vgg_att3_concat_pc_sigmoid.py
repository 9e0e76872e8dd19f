r"""CIFAR-100, (VGG-att3)-concat-pc with sigmoid maps: the reference's option, no published number.

The reference's `python train.py --attn_mode before` without `--normalize_attn` (element-wise
sigmoid, g_a = spatial mean of a_i l_i); neither the reference nor the paper reports its error.
Preset: `model.preset="reference"`, recipe: the reference's (`reference_recipe` in
cifar100_vgg_att3_concat_pc.py, whose docstring lists the deliberate differences).

    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc_sigmoid.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_att3_concat_pc_sigmoid
"""

from ltpa_jax.configs import default, sibling

reference = sibling(__file__, "cifar100_vgg_att3_concat_pc")


def get_config():
    """Returns the config described in the module docstring."""
    c = reference.reference_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.normalization = "sigmoid"
    return c
