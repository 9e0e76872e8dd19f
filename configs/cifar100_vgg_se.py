"""CIFAR-100, the attention-free VGG with squeeze-and-excitation blocks: OURS, no published number.

Not a replication: neither the paper nor its two code bases trained SE. The channel-attention
neighbour of LTPA on the paper's data: the reference architecture without taps
(`num_taps=0`), an SE block (ratio 16, Hu et al. 2018's default) after each of conv1-conv13
(ltpa_jax/models/se.py), trained with the reference recipe (`reference_recipe` in
cifar100_vgg_att3_concat_pc.py: 300 epochs of 3 passes, rate 0.1 halved every 25 epochs), so
it compares with cifar100_vgg_att3_concat_pc.py step for step.

    ltpa-train --config=configs/cifar100_vgg_se.py --workdir=$HOME/ltpa/cifar100_vgg_se
    ltpa-analyze localization --workdir=$HOME/ltpa/cifar100_vgg_se --method=gradcam

SE weighs channels, not places: its maps are Grad-CAM's (`--method=gradcam`), its channel
weights come from `inference.channel_weights`.
"""

from ltpa_jax.configs import sibling

reference = sibling(__file__, "cifar100_vgg_att3_concat_pc")


def get_config():
    """Returns the config described in the module docstring."""
    c = reference.get_config()
    c.model.num_taps = 0
    c.model.squeeze_excitation = 16
    return c
