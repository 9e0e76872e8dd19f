"""AG-CNN (hard attention by cropping) on cluttered digits, with the demo's data and budget.

    ltpa-train --config=configs/digits_agcnn.py --workdir=/tmp/ltpa/digits_agcnn

32x32 canvases with one 10-14 px digit among fragments of other digits (as configs/demo.py).
A 1/8-width global branch finds the digit (its heat map, thresholded at 0.7, gives the crop
box), a local branch of the same size classifies the crop zoomed to 32x32, and the fusion
branch classifies both pooled features (ltpa_jax/models/agcnn.py). One epoch of 18,000 images.
"""

from ltpa_jax.configs import default


def get_config():
    """Returns the config: AG-CNN at 1/8 width on 32x32 cluttered digits, one epoch."""
    c = default.get_config()
    c.dataset = "cluttered_digits"
    c.image_size = 32
    c.model.backbone = "agcnn"
    c.model.num_classes = 10
    c.model.width = 1 / 8
    c.model.agcnn_threshold = 0.7
    c.model.agcnn_crop_size = 32  # The crop (about 16 px) zoomed to the input's side.
    c.model.conv_impl = "xla"  # As the demo: faster than the matmul one at this width on 2 cores.
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
