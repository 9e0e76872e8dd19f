r"""CUB-200-2011, (VGG-att3)-concat-pc: the official CUB run (26.79% top-1 error).

Replicates: the official Lua code's "Train cubs-200 (3level_1global)" in VGGNet/
run_expt_cubs200.sh (`main_AttLevel3_1global.lua`, `models/models_CUBS200/
3_level_atten_1global/`; its test: "Test accuracy: 73.213669313082", run folder
`..._3levels_1global_0.1_0.2_0.4lr_30all`). Preset: `model.preset="official"`. Recipe
(`official_cub_recipe`): batch 128, 320 epochs of one pass, flips, momentum 0.9, weight decay
5e-4, `learningRate=0.1` (= `learning_rate = 0.01` here: optim.sgd damps momentum by 0.9, see
cifar100_vgg_att3_concat_pc_official.py), `epoch_step={30,60,...,300}`,
`lr_step={2,2,0.5,...}`: the rate is doubled after 30 and 60 epochs (0.01 -> 0.02 -> 0.04),
then halved every 30 epochs up to epoch 300 (8 times, to 0.00016) and kept for the last 20.

    ltpa-train --config=configs/cub_vgg_att3_concat_pc_official.py \\
        --workdir=$HOME/ltpa/cub_vgg_att3_concat_pc_official

The published `main_AttLevel3_1global.lua` builds this model anew (He-normal init) in train
mode; the 2-level script loads a CIFAR-100 run's weights (cub_vgg_att2_concat_pc_official.py).
To start from a CIFAR-100 run instead, add
`--config.init_from=$HOME/ltpa/cifar100_vgg_att3_concat_pc_official` (same shapes: every layer
but the 200-class classifier loads).

Deliberate differences from the official run:
* **input size**: the official CUB images are 80x80 (`cubs-200.t7`; `vgg_bn_drop.lua`'s
  "sjmod(80x80)"; the 2-level model max-pools conv7 by 5 to give its 16x16 L2), and the
  3-level model's attention modules expect the CIFAR tap sizes 32x32/16x16/8x8 (its
  `1.1_vgg_local.lua` follows conv7 with `MaxPooling(2.5, 2.5, 2.5, 2.5)` and a 2x nearest
  upsampling to get there). Our VGG has no such layer: we resize the images to 32x32
  (`image_size = 32`), which gives the same tap sizes and parameter shapes, but conv1-conv7
  see 32x32 images instead of 80x80;
* augmentation: resize to 37x37, random 32x32 crop and flip (this project's CUB pipeline);
  the official loop only flips. ImageNet mean/std normalisation (the official preprocessing
  of `cubs-200.t7` is not published);
* the rate changes exactly at the end of epochs 30, 60, ..., 300; the official loop applies
  each change at the start of its (1-based) epoch 30, 60, ..., i.e. one epoch early;
* those of every official VGG config (no learningRateDecay 1e-7 or undamped first step, true
  gradients where the official backward pass averages them, seed, bfloat16 on accelerators).
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")

CUB_DECAY_EPOCHS = tuple(range(30, 301, 30))  # epoch_step = {30, 60, ..., 300}
CUB_DECAY_FACTORS = (2.0, 2.0) + (0.5,) * 8  # lr_step = {2, 2, 0.5, ..., 0.5}


def official_cub_recipe(c):
    """Sets the official CUB recipe (run_expt_cubs200.sh) and preset on a config, in place."""
    c = official.official_recipe(c)
    c.dataset = "caltech_birds2011"
    c.model.num_classes = 200
    c.image_size = 32  # The official 80x80 images reach 32x32 after conv7; see the docstring.
    c.batch_size = 128
    c.eval_batch_size = 256
    c.shuffle_buffer = 6_000
    c.num_epochs = 320
    c.learning_rate = 0.01  # The official learningRate = 0.1 under optim.sgd's dampening 0.9.
    c.lr_decay_at_epochs = CUB_DECAY_EPOCHS
    c.lr_decay_factors = CUB_DECAY_FACTORS
    c.eval_every_steps = 460  # Every 10 epochs (46 steps per epoch of 5,994 images).
    c.checkpoint_every_steps = 460
    return c


def get_config():
    """Returns the config described in the module docstring."""
    c = official_cub_recipe(default.get_config())
    c.model.num_taps = 3
    return c
