r"""CIFAR-100, (VGG-att3)-concat-pc, taps after max-pooling: the reference run (22.92% error).

Replicates: the reference (SaoYan/LearnToPayAttention) `python train.py --attn_mode after
--normalize_attn` (its README: 22.92%): L1-L3 tapped after the max-pool that follows them
(16x16, 8x8, 4x4). Preset: `model.preset="reference"`. Recipe: the reference's
(`reference_recipe` in cifar100_vgg_att3_concat_pc.py: 300 epochs of 3 passes, batch 128,
rate 0.1 halved every 25 epochs, crops of the 4-pixel padded image and flips).

    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc_after.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_att3_concat_pc_after

Deliberate differences: those of cifar100_vgg_att3_concat_pc.py (halvings exactly at epoch
boundaries where the reference's come one epoch early, plus a 12th in its last epoch; no
partial batch per pass; fixed seeds; bfloat16 on accelerators).
"""

from ltpa_jax.configs import default, sibling

reference = sibling(__file__, "cifar100_vgg_att3_concat_pc")


def get_config():
    """Returns the config described in the module docstring."""
    c = reference.reference_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.num_taps = 3
    c.model.tap_position = "after"
    return c
