r"""CUB-200-2011, (VGG-att2)-concat-pc: the official CUB run (26.87% top-1 error).

Replicates: the official Lua code's "Train cubs-200 (2level_1global)" in VGGNet/
run_expt_cubs200.sh (`main_AttLevel2_1global.lua`, `models/models_CUBS200/2_level_atten_1global/`;
its test: "Test accuracy: 73.127373144632"), which starts from a CIFAR-100 (VGG-att2) run's
weights (its `model_wts_*` are set, so the script loads them and builds only the 200-class
classifier anew). Preset: `model.preset="official"`, recipe: the official CUB recipe
(`official_cub_recipe` in cub_vgg_att3_concat_pc_official.py: batch 128, 320 epochs, rate
0.01 doubled at 30 and 60, then halved every 30 epochs up to 300).

    ltpa-train --config=configs/cub_vgg_att2_concat_pc_official.py \\
        --workdir=$HOME/ltpa/cub_vgg_att2_concat_pc_official \\
        --config.init_from=$HOME/ltpa/cifar100_vgg_att2_concat_pc

Deliberate differences: those of cub_vgg_att3_concat_pc_official.py (32x32 images where the
official network pooled 80x80 ones by 5 after conv7, giving the same 16x16/8x8 taps; crops
as well as flips; ImageNet normalisation; changes exactly at epoch boundaries; no
learningRateDecay; true gradients; seed; bfloat16 on accelerators). `init_from` is empty by
default (a path differs per machine): without it the model starts from He-normal weights.
"""

from ltpa_jax.configs import default, sibling

cub_official = sibling(__file__, "cub_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = cub_official.official_cub_recipe(default.get_config())
    c.model.num_taps = 2
    return c
