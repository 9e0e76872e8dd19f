"""Channel attention on cluttered digits: the plain VGG with squeeze-and-excitation blocks.

    ltpa-train --config=configs/digits_se.py --workdir=/tmp/ltpa/digits_se
    ltpa-analyze localization --workdir=/tmp/ltpa/digits_se --method=gradcam

The demo's data, width and schedule (configs/demo.py), no LTPA taps, an SE block after each
of conv1-conv13 (ltpa_jax/models/se.py). The ratio is 4, not the paper's 16: at 1/8 width the
first layers have 8 channels. SE weighs channels, not places, so its maps are Grad-CAM's
(`--method=gradcam`); its channel weights come from `inference.channel_weights`.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the config: the demo's plain 1/8-width VGG with SE (r = 4), 32x32 digits."""
    c = demo.get_config()
    c.model.num_taps = 0
    c.model.squeeze_excitation = 4
    return c
