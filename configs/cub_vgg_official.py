"""CUB-200-2011, the plain VGG baseline: the official CUB run (34.81% top-1 error).

Replicates: the official Lua code's "Train cubs-200 (main)" in VGGNet/run_expt_cubs200.sh
(`lua_source/main.lua` with `models/models_CUBS200/vgg_bn_drop.lua`, trained from He-normal
weights; its test: "Test Accuracy:65.188125647221"). Preset: `model.preset="official"`, no
attention; recipe: the official CUB recipe (`official_cub_recipe` in
cub_vgg_att3_concat_pc_official.py).

    ltpa-train --config=configs/cub_vgg_official.py --workdir=$HOME/ltpa/cub_vgg_official

Deliberate differences: those of cub_vgg_att3_concat_pc_official.py. The network is the
official preset's plain VGG (`vgg_bn_drop.lua` in its CIFAR form: a max-pool after each of the
five stages, 32 -> 1); the CUB file is the same network for 80x80 inputs (its fifth pool moved
before conv13, which runs at 3x3, then a 3x3 pool), on images 2.5 times larger.
"""

from ltpa_jax.configs import default, sibling

cub_official = sibling(__file__, "cub_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = cub_official.official_cub_recipe(default.get_config())
    c.model.num_taps = 0
    return c
