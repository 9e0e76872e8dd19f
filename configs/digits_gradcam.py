"""Post-hoc attention on cluttered digits: the plain VGG, explained by Grad-CAM afterwards.

    ltpa-train --config=configs/digits_gradcam.py --workdir=/tmp/ltpa/digits_gradcam
    ltpa-attend --workdir=/tmp/ltpa/digits_gradcam --method=gradcam
    ltpa-analyze localization --workdir=/tmp/ltpa/digits_gradcam --method=gradcam

The demo's data, width and schedule (configs/demo.py) without attention: the classifier reads
the global feature g. Its maps are Grad-CAM's at the VGG's three tap layers (conv7, conv10,
conv13: `posthoc.default_layers`), computed from the trained network.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the config: the demo's plain 1/8-width VGG on 32x32 cluttered digits."""
    c = demo.get_config()
    c.model.num_taps = 0
    return c
