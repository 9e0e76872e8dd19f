"""Offline demo baseline: the plain VGG (no attention) of configs/demo.py, for comparisons.

    ltpa-train --config=configs/demo_vgg.py --workdir=/tmp/ltpa/demo_vgg

Same data, width, schedule and seed as the VGG-att3 demo; only the attention is gone (the
classifier reads the global feature g). The robustness comparison of the README
(`ltpa-evaluate robustness --compare=...`) plots this run against the attention one.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the demo baseline config: the demo's narrow VGG without attention."""
    c = demo.get_config()
    c.model.num_taps = 0
    return c
