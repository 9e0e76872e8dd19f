"""AG-CNN (hard attention by cropping) on cluttered digits, with the demo's data and budget.

    ltpa-train --config=configs/digits_agcnn.py --workdir=/tmp/ltpa/digits_agcnn

32x32 canvases with one 10-14 px digit among fragments of other digits (as configs/demo.py).
A 1/8-width global branch finds the digit (its heat map, thresholded at 0.7, gives the crop
box), a local branch of the same size classifies the crop zoomed to 32x32, and the fusion
branch classifies both pooled features (ltpa_jax/models/agcnn.py). One epoch of 18,000 images.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the config: AG-CNN at 1/8 width on 32x32 cluttered digits, one epoch."""
    c = demo.get_config()  # The demo's data, width (1/8), convolution and schedule.
    c.model.backbone = "agcnn"
    c.model.agcnn_threshold = 0.7
    c.model.agcnn_crop_size = 32  # The crop (about 16 px) zoomed to the input's side.
    return c
