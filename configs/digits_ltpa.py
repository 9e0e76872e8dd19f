"""LTPA (VGG-att3-concat-pc) on cluttered digits: the learned-attention row of the comparison.

    ltpa-train --config=configs/digits_ltpa.py --workdir=/tmp/ltpa/digits_ltpa
    ltpa-compare --out=/tmp/ltpa/compare    # every mechanism of issue 17, same budget

The demo's network, data and schedule (configs/demo.py): 32x32 canvases with one 10-14 px
digit among fragments, a 1/8-width VGG-att3, one epoch of 18,000 images. Its maps are the
learned att1-att3 (`ltpa-attend`), and Grad-CAM's at the same layers with --method=gradcam.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the config: the demo's VGG-att3 on 32x32 cluttered digits."""
    return demo.get_config()
