"""CIFAR-10, the plain VGG baseline: the official run (7.70% top-1 error).

Replicates: the official Lua code's `lua_source/main.lua` with
`models/models_CIFARS/vgg_bn_drop.lua` (run_expt_cifar10.sh: "Test cifar-10 (main) ...
vgg_bn_drop_withHFLIP ... Test Accuracy: 92.3").
Preset: `model.preset="official"`, no attention. Recipe: the official VGG recipe
(`official_recipe` in cifar100_vgg_att3_concat_pc_official.py: 300 epochs of one pass, batch
128, rate 0.1 (the official 1 under optim.sgd's dampening) halved every 25 epochs, flips only).

    ltpa-train --config=configs/cifar10_vgg.py --workdir=$HOME/ltpa/cifar10_vgg

Deliberate differences: those of every official VGG config (listed in
cifar100_vgg_att3_concat_pc_official.py): mean/std normalisation, not the official data (its
test scripts read `cifar10_prov.t7`, YUV with local contrast normalisation, or the whitened
copy); halvings exactly at epoch boundaries; no learningRateDecay; seed; bfloat16 on accelerators.
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
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 0
    return c
