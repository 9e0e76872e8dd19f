"""Tests for the pre-activation ResNet backbone (plain ResNet-164 and RN-att2, spec section 5).

Full-size networks are only traced (`jax.eval_shape`, no compute); everything that runs uses a
ResNet-11 (one bottleneck per stage) at width 1/4 with tiny batches, on two slow CPU cores.
The RN configs build the official preset (the Lua RN-att2); the structural tests here build
ours, the reference preset, unless they say otherwise (the official layers: tests/test_presets.py).
"""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cifar10_rn_att2, cifar100_rn164, cifar100_rn_att2, default, demo_rn_att2
from ltpa_jax import attention_maps, create_model, descriptors, predict, train
from ltpa_jax.models.resnet import blocks_per_stage

DEPTH, WIDTH, S = 11, 1 / 4, 32
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _config(base=cifar100_rn_att2, **model_overrides):
    config = base.get_config()
    model_overrides.setdefault("preset", "reference")
    for field, value in model_overrides.items():
        config.model[field] = value
    return config


def _small(**overrides):
    return create_model(_config(depth=DEPTH, width=WIDTH, num_classes=10, **overrides))


def _num_params(params) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def _abstract_variables(model, batch: int = 1, size: int = S):
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def _variables(model, seed: int = 0):
    """{"params", "batch_stats"} of `model.init`'s shapes, filled without compiling init.

    Kernels He-normal, biases and running means 0, BN scales and running variances 1.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if name in ("['scale']", "['var']"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if leaf.ndim < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        std = math.sqrt(2.0 / math.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)

    abstract = _abstract_variables(model)
    return {
        c: jax.tree_util.tree_map_with_path(fill, abstract[c]) for c in ("params", "batch_stats")
    }


def _images(batch: int, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, S, S, 3))


# --- Parameter counts, full size, no compute. ---------------------------------------------------

# ResNet-164: stem 3x3x3x16 = 432, then 54 bottlenecks = 1,699,744. A bottleneck of width w on
# C_in inputs has BN 2 C_in + 1x1 C_in w + BN 2w + 3x3 9w^2 + BN 2w + 1x1 4w^2, plus a 1x1
# shortcut 4w C_in in the first block of each stage: stage 1 (w 16) 4,704 + 17 x 4,544 = 81,952;
# stage 2 (w 32) 23,808 + 17 x 17,792 = 326,272; stage 3 (w 64) 94,720 + 17 x 70,400 = 1,291,520.
# Then the final BN of the stage-3 output, 2 x 256 = 512, and per variant (C classes):
#   plain:   Linear(256, C) = 256C + C.
#   RN-att2: BN of the stage-2 tap 2 x 128 = 256; g branch = conv 3x3x256x256 589,824 + BN 512
#            + Linear(256, 256) 65,792 = 656,128; estimators: u 128 + u 256 + project_global
#            Linear(256, 128) 32,896 = 33,280; classifier Linear(128 + 256, C) = 384C + C.
# Plain ResNet-164 on CIFAR-10, 1,703,258, is the usual count of this network.
# The official preset (the Lua RN-att2, what the RN configs build) differs from ours by: no BN on
# the stage-2 tap (-256), a bias on g's conv (+256), BatchNorm1d(256) on g before the
# down-projection (+512), a bias on each score convolution (+2), BatchNorm1d on each g_a
# (128 + 256: +768): +1,282 (derived layer by layer from the Lua files in tests/test_presets.py).
# The plain networks have the same parameters in both presets.
PARAM_COUNTS = [
    # (config module, num_classes, preset, trainable parameters)
    # 432 + 1,699,744 + 512 + 256 + 656,128 + 33,280 + 38,500
    (cifar100_rn_att2, 100, "reference", 2_428_852),
    # 432 + 1,699,744 + 512 + 256 + 656,128 + 33,280 + 3,850
    (cifar10_rn_att2, 10, "reference", 2_394_202),
    (cifar100_rn_att2, 100, "official", 2_428_852 + 1_282),
    (cifar10_rn_att2, 10, "official", 2_394_202 + 1_282),
    (cifar100_rn164, 100, "official", 1_726_388),  # 432 + 1,699,744 + 512 + 25,700
    (cifar100_rn164, 10, "official", 1_703_258),  # 432 + 1,699,744 + 512 + 2,570
]


def _bottleneck(c_in: int, w: int, shortcut: bool) -> int:
    return 2 * c_in + c_in * w + 2 * w + 9 * w * w + 2 * w + 4 * w * w + (4 * w * c_in) * shortcut


def test_block_parameters_decompose_as_documented():
    blocks = sum(
        _bottleneck(c_in, w, True) + 17 * _bottleneck(4 * w, w, False)
        for c_in, w in ((16, 16), (64, 32), (128, 64))
    )
    assert blocks == 81_952 + 326_272 + 1_291_520 == 1_699_744


@pytest.mark.parametrize(
    "module, num_classes, preset, expected",
    PARAM_COUNTS,
    ids=[f"{m.__name__.split('.')[-1]}-{c}classes-{p}" for m, c, p, _ in PARAM_COUNTS],
)
def test_parameter_count_of_full_size_resnet_164(module, num_classes, preset, expected):
    config = module.get_config()
    config.model.num_classes, config.model.preset = num_classes, preset
    params = _abstract_variables(create_model(config))["params"]
    assert _num_params(params) == expected


def test_resnet_164_has_three_stages_of_18_bottlenecks_at_32_16_8():
    model = create_model(_config())
    variables = _abstract_variables(model)
    params = variables["params"]
    for stage in (1, 2, 3):
        assert f"stage{stage}_block18" in params and f"stage{stage}_block19" not in params
    maps = jax.eval_shape(
        functools.partial(attention_maps, model, upsample=False), variables, _images(1)
    )
    assert {k: v.shape for k, v in maps.items()} == {"att1": (1, 16, 16), "att2": (1, 8, 8)}
    assert params["head"]["estimator_att1"]["project_global"]["kernel"].shape == (256, 128)
    assert params["head"]["classifier"]["kernel"].shape == (384, 100)


# --- Forward and backward under jit (ResNet-11, width 1/4, batch 2). ---------------------------

VARIANTS = [
    dict(num_taps=0),  # plain ResNet
    dict(num_taps=2),  # RN-att2-concat-pc, softmax, g projected down
    dict(num_taps=1, compatibility="dp", normalization="sigmoid", head="indep", projection="up"),
    dict(num_taps=2, preset="official"),  # The Lua RN-att2: dropout, BN on g and on each g_a.
]


@pytest.mark.parametrize(
    "overrides", VARIANTS, ids=["-".join(f"{k}={v}" for k, v in o.items()) for o in VARIANTS]
)
def test_variant_runs_forward_and_backward_under_jit(overrides):
    model = _small(**overrides)
    images, labels = _images(2, seed=1), jnp.array([3, 7])
    variables = _variables(model)

    def loss_fn(params, batch_stats):
        logits, state = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, state["batch_stats"])

    args = (variables["params"], variables["batch_stats"])
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss, (logits, new_stats)), grads = step.lower(*args).compile(FAST_COMPILE)(*args)

    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(optax.tree.norm(grads)) > 0
    assert not np.allclose(
        new_stats["stage1_block1"]["bn1"]["mean"],
        variables["batch_stats"]["stage1_block1"]["bn1"]["mean"],
    )
    for name, estimator in grads.get("head", {}).items():
        if "u" in estimator:
            assert np.any(np.asarray(estimator["u"]) != 0), f"no gradient reaches {name}/u"


# --- attention_maps, predict, descriptors on RN-att2. ------------------------------------------


@pytest.fixture(scope="module")
def rn_att2():
    """A ResNet-11 RN-att2 at width 1/4, initialised once, with non-trivial running stats."""
    model = _small()
    variables = _variables(model, seed=1)
    stats = jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])
    return model, {"params": variables["params"], "batch_stats": stats}


@pytest.fixture(scope="module")
def jit_maps(rn_att2):
    model, _ = rn_att2
    return jax.jit(functools.partial(attention_maps, model), static_argnames="upsample")


@pytest.mark.parametrize("upsample", [True, False])
def test_attention_maps_keys_and_shapes(jit_maps, rn_att2, upsample):
    maps = jit_maps(rn_att2[1], _images(3), upsample=upsample)
    expected = {"att1": 32, "att2": 32} if upsample else {"att1": 16, "att2": 8}
    assert {k: v.shape for k, v in maps.items()} == {k: (3, s, s) for k, s in expected.items()}
    assert all(v.dtype == jnp.float32 for v in maps.values())


def test_softmax_maps_sum_to_one_at_tap_resolution(jit_maps, rn_att2):
    maps = jit_maps(rn_att2[1], _images(3), upsample=False)
    for name, m in maps.items():
        np.testing.assert_allclose(np.asarray(m).sum(axis=(1, 2)), 1.0, rtol=1e-5, err_msg=name)


def test_attention_maps_are_deterministic_and_jit_agrees_with_eager(jit_maps, rn_att2):
    model, variables = rn_att2
    images = _images(2, seed=2)
    first = jit_maps(variables, images, upsample=True)
    second = jit_maps(variables, images, upsample=True)
    eager = attention_maps(model, variables, images)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        np.testing.assert_allclose(first[name], eager[name], rtol=1e-4, atol=1e-6)


def test_predict_and_descriptors_work_unchanged(rn_att2):
    model, variables = rn_att2
    images = _images(2, seed=3)
    assert predict(model, variables, images).shape == (2, 10)
    shapes = {k: v.shape for k, v in descriptors(model, variables, images).items()}
    # Width 1/4: g has 64 channels; att1 is g_a over stage 2 (32 channels), att2 over stage 3.
    assert shapes == {"global": (2, 64), "att1": (2, 32), "att2": (2, 64)}


def test_plain_resnet_has_no_maps_and_pooled_global_descriptor():
    model = _small(num_taps=0)
    variables = _abstract_variables(model)
    assert jax.eval_shape(functools.partial(attention_maps, model), variables, _images(1)) == {}
    shapes = jax.eval_shape(functools.partial(descriptors, model), variables, _images(1))
    assert {k: v.shape for k, v in shapes.items()} == {"global": (1, 64)}


# --- Config validation. ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [164, 110, 56, 20, 11])
def test_valid_depths(depth):
    assert blocks_per_stage(depth) == (depth - 2) // 9


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(depth=18), "model.depth=18 .*9n \\+ 2"),
        (dict(depth=2), "model.depth=2"),
        (dict(num_taps=3), "model.num_taps=3 .*resnet.*0 \\(plain ResNet\\), 1 .* or 2"),
        (dict(num_taps=-1), "model.num_taps=-1"),
        (dict(tap_position="after"), "model.tap_position='after' .*resnet.*'before'"),
        (dict(batch_norm=False), "model.batch_norm=False .*resnet"),
        (dict(projection="sideways"), "model.projection='sideways'"),
    ],
)
def test_impossible_combination_raises_value_error_naming_the_choices(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model(_config(**overrides))


def test_resnet_configs_carry_the_official_recipe():
    for module in (cifar100_rn_att2, cifar10_rn_att2, cifar100_rn164):
        c = module.get_config()
        assert (c.model.backbone, c.model.depth, c.batch_size, c.num_epochs) == (
            "resnet",
            164,
            64,
            200,
        )
        assert (c.learning_rate, c.lr_decay_factor, tuple(c.lr_decay_at_epochs)) == (
            0.1,
            0.2,
            (60, 120, 160),
        )
        assert (c.momentum, c.nesterov, c.weight_decay) == (0.9, True, 5e-4)
        assert (c.model.preset, c.reset_momentum_at_decay) == ("official", True)
        assert (c.crop_padding, c.crop_padding_mode) == (4, "reflect")
    assert cifar100_rn164.get_config().model.num_taps == 0
    assert cifar10_rn_att2.get_config().model.num_classes == 10


def test_vgg_default_is_unchanged_by_the_resnet_fields():
    c = default.get_config()
    assert (c.model.backbone, c.crop_padding_mode) == ("vgg", "constant")


# --- Training. ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_small_resnet_config_trains_on_cluttered_digits_on_8_devices(tmp_path):
    from tests.test_train import read_scalars

    config = demo_rn_att2.get_config()
    config.model.depth = DEPTH
    config.model.width = WIDTH
    config.num_digits_train, config.num_digits_test, config.shuffle_buffer = 64, 32, 64
    config.batch_size, config.eval_batch_size = 16, 16
    config.num_train_steps, config.warmup_epochs, config.lr_decay_at_epochs = 8, 0.0, ()
    config.learning_rate = 0.02
    config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 2, 8, 8
    config.num_picture_images = 4
    final = train.train_and_evaluate(config, str(tmp_path))
    assert json.loads((tmp_path / "final_metrics.json").read_text())["step"] == 8
    assert np.isfinite(final["loss"]) and 0 <= final["accuracy"] <= 1
    losses = read_scalars(str(tmp_path))["train_loss"]
    assert all(np.isfinite(v) for v in losses.values())
    assert losses[8] < losses[2], losses  # 64 examples, 2 passes: it starts to fit them.
    assert list((tmp_path / "pictures").glob("attention_step*.png"))


@pytest.mark.slow
def test_cifar100_rn_att2_config_starts_training_on_mock_cifar100(tmp_path):
    import tensorflow_datasets as tfds

    config = cifar100_rn_att2.get_config()  # The real recipe, shrunk only in size and length.
    config.model.depth, config.model.width = DEPTH, WIDTH
    config.batch_size, config.eval_batch_size, config.shuffle_buffer = 16, 16, 64
    config.num_train_steps, config.eval_every_steps, config.num_picture_images = 2, 2, 0
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        final = train.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(final["loss"])
    assert json.loads((tmp_path / "final_metrics.json").read_text())["step"] == 2
