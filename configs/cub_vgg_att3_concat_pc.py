"""CUB-200-2011 at 224x224, (VGG-att3)-concat-pc, fine-tuned from a CIFAR-100 run.

Official runs: 26.79% error. Set the CIFAR-100 run to start from (its classifier is re-initialised):

    ltpa-train --config=configs/cub_vgg_att3_concat_pc.py --workdir=/tmp/ltpa/cub \\
        --config.init_from=/tmp/ltpa/cifar100_vgg_att3_concat_pc

The global feature layer (a 7x7 convolution at 224x224) has no counterpart at 32x32 and is
initialised anew, as are the classifier layers. CUB must be prepared first (README, 'CUB').
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config described in the module docstring."""
    c = default.get_config()
    c.dataset = "caltech_birds2011"
    c.model.num_classes = 200
    c.image_size = 224
    c.batch_size = 32
    c.eval_batch_size = 64
    c.shuffle_buffer = 6_000
    c.num_epochs = 320
    c.lr_decay_every_epochs = 25
    c.eval_every_steps = 1_000
    c.checkpoint_every_steps = 500
    return c
