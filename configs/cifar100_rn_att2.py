"""CIFAR-100, RN-att2-concat-pc: pre-activation ResNet-164 with attention at the ends of stages 2
and 3 (spec section 5), official ResNet recipe (spec section 6): SGD with Nesterov momentum 0.9,
lr 0.1 divided by 5 at epochs 60, 120 and 160, 200 epochs, batch 64, weight decay 5e-4, flips
and random 32x32 crops of the 4-pixel reflect-padded image. No dropout (see models/resnet.py).

    ltpa-train --config=configs/cifar100_rn_att2.py --workdir=/tmp/ltpa/cifar100_rn_att2
"""

from ltpa_jax.configs import default


def resnet_recipe(c):
    """Sets the official ResNet recipe and the RN-att2 model on a default config, in place."""
    c.model.backbone = "resnet"
    c.model.depth = 164
    c.model.num_taps = 2  # att1 = end of stage 2 (16x16), att2 = end of stage 3 (8x8).
    c.model.projection = "down"  # g (256) mapped down to 128 for att1, as in the paper.
    c.crop_padding = 4
    c.crop_padding_mode = "reflect"
    c.batch_size = 64
    c.num_epochs = 200
    c.learning_rate = 0.1
    c.lr_decay_at_epochs = (60, 120, 160)
    c.lr_decay_factor = 0.2
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    return c


def get_config():
    """Returns the config described in the module docstring."""
    c = resnet_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    return c
