"""CIFAR-100, the plain VGG baseline: the official run (30.71% top-1 error; the paper: 30.62%).

Replicates: the official Lua code's baseline, VGGNet/`lua_source/main.lua` with
`models/models_CIFARS/vgg_bn_drop.lua` (run_expt_cifar100.sh: "Test cifar-100 (main) ... Test
accuracy: 69.29"), the network behind the paper's VGG row. Preset: `model.preset="official"`
with no attention (`num_taps=0`). Recipe: the official VGG recipe
(`official_recipe` in cifar100_vgg_att3_concat_pc_official.py): SGD momentum 0.9, weight
decay 5e-4, batch 128, 300 epochs of one pass, learning rate 0.1 (the official 1 under
optim.sgd's dampening) halved every 25 epochs, horizontal flips only.

    ltpa-train --config=configs/cifar100_vgg.py --workdir=$HOME/ltpa/cifar100_vgg

Deliberate differences from the official run (as for every official VGG config, see
cifar100_vgg_att3_concat_pc_official.py): mean/std normalisation instead of ZCA whitening;
halvings exactly at epochs 25, ..., 275 (the official loop: one epoch early, and a 12th at
epoch 300); no learningRateDecay 1e-7 and no undamped first step; seed 0; bfloat16 compute
on a GPU/TPU.
The network: the official preset with `num_taps=0` builds the official baseline itself,
szagoruyko's cifar.torch VGG (`vgg_bn_drop.lua`: 13 convolutions with a max-pool after every
stage, then Dropout-Linear(512, 512)-BN-ReLU-Dropout-Linear; ltpa_jax/models/vgg.py), not the
attention models' backbone without attention.
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.num_taps = 0
    return c
