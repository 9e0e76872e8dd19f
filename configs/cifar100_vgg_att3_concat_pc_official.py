r"""CIFAR-100, (VGG-att3)-concat-pc: the official run (22.98% top-1 error; the paper: 22.97%).

Replicates: the official Lua code (saumya-jetley/cd_ICLR18_LearnToPayAttention), VGGNet/
`lua_source/main_AttLevel3_1global.lua` with `models/models_CIFARS/3_level_atten_1global/`
(run_expt_cifar100.sh: "Test cifar-100 (3level_1global) ... Test accuracy: 77.02").
Preset: `model.preset="official"` (dropout 0.3/0.4 in the convolutions, BN eps 1e-3, He-normal
init, g mapped down to 256 for L1 through BN-ReLU-Dropout-Linear, each g_a through
BN-ReLU-Dropout(0.5) before the classifier). Recipe (`official_recipe`, the defaults of the
official main_*.lua): SGD momentum 0.9, weight decay 5e-4, batch 128, 300 epochs of one pass,
the rate halved every 25 epochs, horizontal flips only (no crops).

    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc_official.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_att3_concat_pc_official

The official `learningRate = 1` is this config's `learning_rate = 0.1`: Torch's `optim.sgd`
damps the momentum buffer by default (dampening = momentum = 0.9: v <- 0.9 v + 0.1 g), which
is torch.optim.SGD's / optax's undamped update (v <- 0.9 v + g) at a tenth of the rate.

Deliberate differences from the official run:
* per-channel mean/std normalisation instead of the official ZCA-whitened data
  (`cifar100_whitened.t7`; this project has no ZCA whitening);
* the rate is halved exactly at the end of epochs 25, 50, ..., 275 (11 halvings); the official
  loop halves it at the start of its (1-based) epochs 25, 50, ..., 300, i.e. one epoch early and
  a 12th time for the last epoch;
* no `learningRateDecay = 1e-7` (the official rate is divided by 1 + 1e-7 x step, 1.2% lower by
  the last step) and no undamped first step (optim.sgd's first update is the raw gradient at
  rate 1, ten times this config's first step);
* gradients are the true gradients: the official hand-written backward pass averages them where
  branches join (spec section 6), which autodiff does not;
* seed 0 here, 1234567890 there; bfloat16 compute on a GPU/TPU.
A pass is 390 full batches of a fresh permutation, as in the official loop (the partial last
batch is dropped there too).
"""

from ltpa_jax.configs import default


def official_recipe(c):
    """Sets the official VGG recipe (CIFAR) and the official architecture preset, in place."""
    c.model.preset = "official"
    c.model.projection = "down"  # g (512) mapped down to L1's 256 channels (official default).
    c.passes_per_epoch = 1
    c.num_epochs = 300
    c.batch_size = 128
    c.learning_rate = 0.1  # The official learningRate = 1 under optim.sgd's dampening 0.9.
    c.lr_decay_factor = 0.5
    c.lr_decay_every_epochs = 25
    c.lr_decay_at_epochs = ()
    c.lr_decay_factors = ()
    c.momentum = 0.9
    c.nesterov = False
    c.reset_momentum_at_decay = False
    c.weight_decay = 5e-4
    c.augment = True
    c.crop_padding = 0  # The official loop only flips (hflip_aug); a crop of 0 padding is none.
    c.crop_padding_mode = "constant"
    return c


def get_config():
    """Returns the config described in the module docstring."""
    c = official_recipe(default.get_config())
    c.dataset = "cifar100"
    c.model.num_classes = 100
    c.model.num_taps = 3
    return c
