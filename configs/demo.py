"""Offline demo: VGG-att3-concat-pc on cluttered digits (no download), minutes on a laptop CPU.

    ltpa-train --config=configs/demo.py --workdir=/tmp/ltpa/demo

32x32 canvases with one 10-14 px digit among fragments of other digits, a 1/8-width VGG-att3
(0.3 M parameters), one epoch of 18,000 images with the learning rate divided by 5 for its
last 30%.
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the demo config: a narrow VGG-att3 on 32x32 cluttered digits."""
    c = default.get_config()
    c.dataset = "cluttered_digits"
    c.image_size = 32
    c.model.num_classes = 10
    c.model.width = 1 / 8
    # At this width XLA's convolution beats the matmul one on 2 cores: the whole demo took
    # 4m44s against 5m56s, back to back on one machine; "matmul" wins at full width.
    c.model.conv_impl = "xla"
    c.num_digits_train = 18_000
    c.num_digits_test = 1_000
    c.shuffle_buffer = 18_000
    c.batch_size = 64
    c.eval_batch_size = 200
    c.num_epochs = 1
    c.learning_rate = 0.1
    c.warmup_epochs = 0.05
    c.lr_decay_at_epochs = (0.7,)
    c.lr_decay_factor = 0.2
    c.log_every_steps = 10
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 50
    c.num_picture_images = 8
    return c
