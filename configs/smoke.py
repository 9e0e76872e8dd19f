"""Tiny config for tests: a 1/16-width VGG-att3 on CIFAR-10 (TFDS mock data in the tests).

ltpa-train --config=configs/smoke.py --workdir=/tmp/ltpa/smoke --config.dataset=cluttered_digits
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the smoke-test config: a few steps of a tiny model, saving and evaluating often."""
    c = default.get_config()
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.width = 1 / 16
    c.batch_size = 16
    c.eval_batch_size = 16
    c.shuffle_buffer = 256
    c.num_digits_train = 256
    c.num_digits_test = 64
    c.num_train_steps = 8
    c.learning_rate = 0.05
    c.log_every_steps = 2
    c.eval_every_steps = 4
    c.checkpoint_every_steps = 2
    c.keep_checkpoints = 2
    c.num_picture_images = 4
    return c
