"""Local self-attention on cluttered digits: convolutions early, self-attention late.

    ltpa-train --config=configs/digits_self_attention.py --workdir=/tmp/ltpa/digits_sa
    ltpa-attend --workdir=/tmp/ltpa/digits_sa

The demo's data, width and schedule (configs/demo.py), no LTPA taps; conv11-conv13 (stage 5,
8x8 at 32x32 input) are replaced by 7x7 local self-attention layers with relative positions,
4 heads of 16 channels (ltpa_jax/models/local_attention.py; Ramachandran et al. 2019 found 7x7
to 9x9 extents better than 3x3). Its maps are the attention each position receives in
self_attention11-13 (`inference.attention_maps`), and Grad-CAM's with --method=gradcam.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the config: the demo's 1/8-width VGG with 7x7 self-attention in stage 5."""
    c = demo.get_config()
    c.model.num_taps = 0
    c.model.self_attention_kernel = 7
    c.model.self_attention_heads = 4
    return c
