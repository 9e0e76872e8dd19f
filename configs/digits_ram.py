"""RAM (the recurrent attention model) on cluttered digits, with the demo's data and budget.

    ltpa-train --config=configs/digits_ram.py --workdir=/tmp/ltpa/digits_ram

32x32 canvases with one 10-14 px digit among fragments of other digits (as configs/demo.py).
Six glimpses of a 3-scale retina (8, 16 and 32 px patches, each pooled to 8x8), an LSTM core
of 256 units, a Gaussian location policy trained by REINFORCE with a learned baseline, plus
the classifier's cross-entropy (ltpa_jax/models/ram.py). One epoch of 18,000 images. The
attention pictures show each glimpse's location and the path (numbered points).

RAM learns slowly with the loop's SGD: one epoch gave 32.7 % test accuracy, four epochs
(`--config.num_epochs=4`) 62.6 %, its glimpses 2-6 on the digit for 10-19 % of the test images
by the pointing game (`ltpa-analyze localization`; 2026-11-27, this 2-core CPU, about 10 s of
training per epoch). With the policy and baseline losses summed over the glimpses instead of
averaged (5 times the step on the location and baseline networks), the training loss reached
~1e7 in a 40-step run, and over an epoch the policy sent every later glimpse into one corner
(21.0 % after one epoch, 44.8 % after four).
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the config: RAM, 6 glimpses of an 8-16-32 px retina, on 32x32 cluttered digits."""
    c = demo.get_config()  # The demo's data and schedule (RAM has no convolutions: no width).
    c.model.backbone = "ram"
    c.model.width = 1.0
    c.model.conv_impl = "auto"
    c.model.ram_num_glimpses = 6
    c.model.ram_glimpse_size = 8
    c.model.ram_num_scales = 3
    c.model.ram_hidden_size = 256
    # 3.2 px on a 32 px canvas; at 0.1 the policy ran into a corner within 150 steps.
    c.model.ram_location_std = 0.2
    return c
