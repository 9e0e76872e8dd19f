"""CIFAR-10, (RN-att2)-concat-pc: pre-activation ResNet-164 with attention, the official recipe.

The official ResNet recipe and preset of configs/cifar100_rn_att2.py (whose docstring lists
the source, the recipe and the deliberate differences) on CIFAR-10, the dataset the official
`train_attenunit_2levels.lua` reads by default. No published number is claimed.

    ltpa-train --config=configs/cifar10_rn_att2.py --workdir=$HOME/ltpa/cifar10_rn_att2
"""

from ltpa_jax.configs import default, sibling

cifar100_rn_att2 = sibling(__file__, "cifar100_rn_att2")


def get_config():
    """Returns the config described in the module docstring."""
    c = cifar100_rn_att2.resnet_recipe(default.get_config())
    c.dataset = "cifar10"
    c.model.num_classes = 10
    return c
