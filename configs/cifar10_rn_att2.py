"""CIFAR-10, RN-att2-concat-pc (pre-activation ResNet-164 with attention at stages 2 and 3),
official ResNet recipe: see configs/cifar100_rn_att2.py.

    ltpa-train --config=configs/cifar10_rn_att2.py --workdir=/tmp/ltpa/cifar10_rn_att2
"""

from ltpa_jax.configs import default, sibling

cifar100_rn_att2 = sibling(__file__, "cifar100_rn_att2")


def get_config():
    """Returns the config described in the module docstring."""
    c = cifar100_rn_att2.resnet_recipe(default.get_config())
    c.dataset = "cifar10"
    c.model.num_classes = 10
    return c
