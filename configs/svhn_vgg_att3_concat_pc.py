r"""SVHN (cropped digits), (VGG-att3)-concat-pc: the official SVHN recipe, no published number here.

Follows: the official Lua code's "Train svhn-10 (3level_1global)" in VGGNet/run_expt_svhn.sh
(`main_AttLevel3_1global.lua`, `models/models_SVHN/3_level_atten_1global/`): batch 128, 300
epochs of one pass, the rate halved every 25 epochs, momentum 0.9, weight decay 5e-4. The
script sets `learningRate=1 #maybe 0.1`; this config takes 1, i.e. `learning_rate = 0.1`
here (optim.sgd damps momentum by 0.9, see cifar100_vgg_att3_concat_pc_official.py). The
official scripts record no SVHN test accuracy and spec section 7 quotes none, so no number
is claimed. Preset: `model.preset="official"`.

    ltpa-train --config=configs/svhn_vgg_att3_concat_pc.py \\
        --workdir=$HOME/ltpa/svhn_vgg_att3_concat_pc

Deliberate differences: no horizontal flips (the official loop flips every dataset, digits
included; here digits are never mirrored) and no crops, as there; TFDS's `svhn_cropped` train
split (73,257 images; whether the official `svhn_provider.t7` held the extra split is not
recorded); mean/std normalisation; and those of every official VGG config (halvings exactly
at epoch boundaries, no learningRateDecay, true gradients, seed, bfloat16 on accelerators).
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "svhn_cropped"
    c.model.num_classes = 10
    c.model.num_taps = 3
    c.shuffle_buffer = 80_000
    return c
