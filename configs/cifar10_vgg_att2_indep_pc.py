r"""CIFAR-10, (VGG-att2)-indep-pc: the official two-classifier model, no published number.

The official code's `models/models_CIFARS/2_level_atten_1global_pred-ensemble/` trained by
`main_AttLevel2_1global.lua` (run_expt_cifar10.sh, "Train cifar-10
(2level_1global_with_2_independent_prediction_pipelines)"; no test accuracy is recorded): one
classifier per g_a, per-level log-softmax outputs summed. Preset: `model.preset="official"`,
recipe: the official VGG recipe (`official_recipe` in cifar100_vgg_att3_concat_pc_official.py,
whose docstring lists the deliberate differences).

    ltpa-train --config=configs/cifar10_vgg_att2_indep_pc.py \\
        --workdir=$HOME/ltpa/cifar10_vgg_att2_indep_pc
"""

from ltpa_jax.configs import default, sibling

official = sibling(__file__, "cifar100_vgg_att3_concat_pc_official")


def get_config():
    """Returns the config described in the module docstring."""
    c = official.official_recipe(default.get_config())
    c.dataset = "cifar10"
    c.model.num_classes = 10
    c.model.num_taps = 2
    c.model.head = "indep"
    return c
