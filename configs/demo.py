"""Offline demo: VGG-att3-concat-pc on cluttered digits (no download), minutes on a laptop CPU.

ltpa-train --config=configs/demo.py --workdir=/tmp/ltpa/demo
"""

from configs import default


def get_config():
    """Returns the demo config: a narrow VGG-att3 on 64x64 cluttered digits."""
    c = default.get_config()
    c.dataset = "cluttered_digits"
    c.image_size = 64
    c.model.num_classes = 10
    c.model.width = 1 / 8
    c.num_digits_train = 6_000
    c.num_digits_test = 1_000
    c.shuffle_buffer = 6_000
    c.batch_size = 64
    c.eval_batch_size = 200
    c.num_epochs = 4
    c.learning_rate = 0.05
    c.lr_decay_every_epochs = 2
    c.warmup_epochs = 0.25
    c.log_every_steps = 10
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 50
    c.num_picture_images = 12
    return c
