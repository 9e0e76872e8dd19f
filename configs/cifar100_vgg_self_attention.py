r"""CIFAR-100, VGG with local self-attention in stage 5: OURS, no published number.

Not a replication: neither the paper nor its two code bases trained self-attention. The
self-attention neighbour of LTPA on the paper's data (Ramachandran et al. 2019: convolutions
early, self-attention late, a 7x7 extent): the reference architecture without taps
(`num_taps=0`) whose conv11-conv13 (stage 5, 8x8 at 32x32) are 7x7 multi-head local
self-attention layers with relative row/column embeddings, 8 heads of 64 channels
(ltpa_jax/models/local_attention.py), trained with the reference recipe (`reference_recipe` in
cifar100_vgg_att3_concat_pc.py), so it compares with cifar100_vgg_att3_concat_pc.py step for
step.

    ltpa-train --config=configs/cifar100_vgg_self_attention.py \\
        --workdir=$HOME/ltpa/cifar100_vgg_self_attention
    ltpa-attend --workdir=$HOME/ltpa/cifar100_vgg_self_attention

Its maps are the attention each position receives in self_attention11-13
(`inference.attention_maps`), and Grad-CAM's with `--method=gradcam`.
"""

from ltpa_jax.configs import sibling

reference = sibling(__file__, "cifar100_vgg_att3_concat_pc")


def get_config():
    """Returns the config described in the module docstring."""
    c = reference.get_config()
    c.model.num_taps = 0
    c.model.self_attention_kernel = 7
    c.model.self_attention_heads = 8
    return c
