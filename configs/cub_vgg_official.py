"""CUB-200-2011, the plain VGG baseline: the official CUB run (34.81% top-1 error).

Replicates: the official Lua code's "Train cubs-200 (main)" in VGGNet/run_expt_cubs200.sh
(`lua_source/main.lua` with `models/models_CUBS200/vgg_bn_drop.lua`, trained from He-normal
weights; its test: "Test Accuracy:65.188125647221"). Preset: `model.preset="official"`, no
attention; recipe: the official CUB recipe (`official_cub_recipe` in
cub_vgg_att3_concat_pc_official.py).

    ltpa-train --config=configs/cub_vgg_official.py --workdir=$HOME/ltpa/cub_vgg_official

Deliberate differences: those of cub_vgg_att3_concat_pc_official.py, and the network: the
official CUB baseline is szagoruyko's VGG with all five 2x2 max-pools on 80x80 images (and a
3x3 pool to 1x1), while this config is the paper's VGG of the CIFAR models (the first two
pools removed) on 32x32 images, with the official preset's classifier on g.
"""

from ltpa_jax.configs import default, sibling

cub_official = sibling(__file__, "cub_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = cub_official.official_cub_recipe(default.get_config())
    c.model.num_taps = 0
    return c
