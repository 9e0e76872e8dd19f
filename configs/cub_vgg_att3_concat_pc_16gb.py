r"""CUB-200-2011 at 224x224, (VGG-att3)-concat-pc, sized for a 16 GB accelerator (Colab T4, TPU v3).

    ltpa-train --config=configs/cub_vgg_att3_concat_pc_16gb.py --workdir=/tmp/ltpa/cub \\
        --config.init_from=/tmp/ltpa/cifar100_vgg_att3_concat_pc

The full-width VGG keeps ~1.4 GiB of activations per 224x224 image for its backward pass
(conv1-conv7 run at full resolution), so the plain CUB config's batch of 32 needs ~45 GiB.
`benchmarks/memory.py` (README, "Memory at 224x224") puts the largest batch in 16 GiB at 11
(float32) and 22 (bfloat16 with every conv block rematerialised); this config takes bfloat16,
`remat="full"` and a batch of 16 to leave room for what an accelerator's compiler adds, with
the learning rate scaled linearly from the CUB config's 0.1 at batch 32.
"""

from ltpa_jax.configs import sibling

cub_vgg_att3_concat_pc = sibling(__file__, "cub_vgg_att3_concat_pc")


def get_config():
    """Returns the CUB config at batch 16, bfloat16, blocks rematerialised."""
    c = cub_vgg_att3_concat_pc.get_config()
    c.batch_size = 16
    c.eval_batch_size = 32
    c.learning_rate = 0.05
    c.half_precision = True
    c.remat = "full"
    return c
