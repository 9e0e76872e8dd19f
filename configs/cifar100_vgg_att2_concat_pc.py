r"""CIFAR-100, (VGG-att2)-concat-pc: the official run (23.17% top-1 error).

Replicates: the official Lua code's `lua_source/main_AttLevel2_1global.lua` with
`models/models_CIFARS/2_level_atten_1global/` (run_expt_cifar100.sh: "Test cifar-100
(2level_1global) ... Test accuracy: 76.83"): attention at L2 (conv10, 16x16) and L3 (conv13,
8x8), each g_a through BN-ReLU-Dropout(0.5), concatenated (1024), one linear classifier.
Preset: `model.preset="official"`. Recipe: the official VGG recipe (`official_recipe` in
cifar100_vgg_att3_concat_pc_official.py; 300 epochs of one pass, batch 128, rate 0.1 halved
every 25 epochs, flips only).

    ltpa-train --config=configs/cifar100_vgg_att2_concat_pc.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_att2_concat_pc

Deliberate differences: those of every official VGG config (cifar100_vgg_att3_concat_pc_official.py:
no ZCA whitening, halvings exactly at epoch boundaries, no learningRateDecay, true gradients
where the official backward pass averages them, seed, bfloat16 on accelerators).
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.num_taps = 2
    return c
