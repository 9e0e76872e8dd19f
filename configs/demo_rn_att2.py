"""Offline demo: a small RN-att2-concat-pc on cluttered digits (no download), minutes on a CPU.

    ltpa-train --config=configs/demo_rn_att2.py --workdir=/tmp/ltpa/demo_rn

The same data and schedule as configs/demo.py (VGG-att3), so the two can be compared: 32x32
canvases with one 10-14 px digit among fragments of other digits, one epoch of 18,000 images,
the learning rate (0.05 here, 0.1 for the VGG) divided by 5 for its last 30%. The network is a
pre-activation ResNet-20 (2 bottlenecks per stage) at half width: stage outputs 32/64/128
channels, g 128, in the official preset (RN-att2 exists only in the official code: its
initialisation, BN eps, dropout and stride placement); 230,388 parameters. Measured on 2 cores
(2026-11-27): 81.2 % test accuracy in 1m01s; the reference preset's initialisation (BN scales
from U(0, 1)) reached 46.5 % in the same budget.
"""

from ltpa_jax.configs import sibling

demo = sibling(__file__, "demo")


def get_config():
    """Returns the demo config: a narrow ResNet-20 with attention at stages 2 and 3."""
    c = demo.get_config()
    c.model.backbone = "resnet"
    c.model.preset = "official"  # RN-att2's source; see the docstring.
    c.model.depth = 20
    c.model.width = 1 / 2
    c.model.num_taps = 2  # att1 = end of stage 2 (16x16), att2 = end of stage 3 (8x8).
    c.model.projection = "down"  # g mapped down to the stage-2 width, as in the paper.
    c.nesterov = True
    c.learning_rate = 0.05  # 0.1 (the VGG demo's) started slowly in a 90-step trial; untuned.
    return c
