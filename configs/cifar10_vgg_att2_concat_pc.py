r"""CIFAR-10, (VGG-att2)-concat-pc: the official run (5.42% top-1 error).

Replicates: the official Lua code's `lua_source/main_AttLevel2_1global.lua` with
`models/models_CIFARS/2_level_atten_1global/` (run_expt_cifar10.sh: "Test cifar-10
(2level_1global) ... Test accuracy: 94.58"). Preset: `model.preset="official"`. Recipe: the
official VGG recipe (`official_recipe` in cifar100_vgg_att3_concat_pc_official.py).

    ltpa-train --config=configs/cifar10_vgg_att2_concat_pc.py \\
        --workdir=$HOME/ltpa/cifar10_vgg_att2_concat_pc

Deliberate differences: those of every official VGG config (listed in
cifar100_vgg_att3_concat_pc_official.py: normalisation, halvings exactly at epoch boundaries,
no learningRateDecay, true gradients, seed, bfloat16 on accelerators).
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 2
    return c
