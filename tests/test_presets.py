"""The two presets (`config.model.preset`) against their sources, and the training mechanics
that replicating them needs: dropout from (seed, step), passes per epoch, momentum reset.

Reference = SaoYan/LearnToPayAttention (PyTorch); official = saumya-jetley/
cd_ICLR18_LearnToPayAttention (Torch/Lua). The reference parameter counts are pinned in
tests/test_models.py (spec section 4); the official ones here, derived from the Lua files.
"""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import override

from configs import smoke
from ltpa_jax import checkpointing, rundir, train, validation
from ltpa_jax.configs import default
from ltpa_jax.models import AttentionSpec, create_model, heads

# --- Parameter counts of the official Lua models. ------------------------------------------------
#
# Counted from the layer lists of the Lua files (weights + biases; BN: gamma + beta; a 3x3
# convolution i -> o: 9 i o + o; K classes):
#
# VGG-att3-concat-pc, `VGGNet/models/models_CIFARS/3_level_atten_1global/*.lua`:
#   conv1-conv15 (1_, 2_, 3_vgg_local.lua, 3_vgg_global.lua): 3->64, 64->64, 64->128, 128->128,
#     128->256, 256->256 x2, 256->512, 512->512 x7 = 19,434,304; their
#     SpatialBatchNormalization(n, 1e-3): 2 * (2 * 64 + 2 * 128 + 3 * 256 + 8 * 512) = 10,496;
#   g, 3_vgg_global.lua: Linear(512, 512) = 262,656;
#   1_vgg_atten.lua: BatchNormalization(512) 1,024 + Linear(512, 256) 131,328 +
#     SpatialConvolution(256, 1, 1, 1) 257; 2_ and 3_vgg_atten.lua: (512, 1, 1, 1) 513 each;
#   vgg_match.lua: BatchNormalization(256), (512), (512) 2,560 + Linear(1280, K);
#   = 19,843,651 + 1,281 K: 19,971,751 (K = 100), 19,856,461 (K = 10).
# VGG-att2-concat-pc, `2_level_atten_1global/*.lua`: the same convs, BN and g; two score
#   convolutions (512, 1) 1,026; vgg_match.lua BatchNormalization(512) x2 2,048 +
#   Linear(1024, K) = 19,710,530 + 1,025 K: 19,813,030 (K = 100), 19,720,780 (K = 10).
# Plain VGG, `vgg_bn_drop.lua`: conv1-conv13 14,714,688 + their BN 8,448 + Linear(512, 512)
#   262,656 + BatchNormalization(512) 1,024 + Linear(512, K) = 14,986,816 + 513 K:
#   15,038,116 (K = 100), 15,089,416 (K = 200).
# RN-att2, `RESNET/models/Resnet-att2/*.lua` at depth 164 (n = 18 bottlenecks per stage; the
#   ResNet convolutions have no bias, utils.DisableBias): stem 3x3 3->16 432; a bottleneck
#   i -> o (b = o / 4): BN(i) 2i + 1x1 i b + BN(b) 2b + 3x3 9 b^2 + BN(b) 2b + 1x1 b o (+ the
#   1x1 shortcut i o where i != o); stages 16->64, 64->128, 128->256: body 1,700,176;
#   2.3_resnet_global.lua: BN(256) 512 + 3x3 256->256 with bias 590,080 + BN(256) 512 +
#   Linear(256, 256) 65,792; 3.2_atten.lua: BN(256) 512 + Linear(256, 128) 32,896 + conv
#   (128, 1) 129; 3.3_atten.lua: conv (256, 1) 257; 4_match_singleimagepred_indep.lua:
#   BN(128) 256 + BN(256) 512 + Linear(384, K) (the file says 100) = 2,391,634 + 385 K:
#   2,430,134 (K = 100).
# The functions below compute the same sums from the layer lists; the test pins both.


def _conv(i: int, o: int, k: int = 3, bias: bool = True) -> int:
    return k * k * i * o + (o if bias else 0)


_VGG_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
_VGG_CONVS += [(256, 512)] + [(512, 512)] * 7  # conv8-conv15.


def _official_vgg_att_count(num_taps: int, k: int) -> int:
    convs = sum(_conv(i, o) + 2 * o for i, o in _VGG_CONVS)  # With their batch norms.
    g = 512 * 512 + 512
    if num_taps == 3:
        attention = (1024 + 512 * 256 + 256 + 257) + 513 + 513
        match = 2 * (256 + 512 + 512) + 1280 * k + k
    else:
        attention = 513 + 513
        match = 2 * (512 + 512) + 1024 * k + k
    return convs + g + attention + match


def _official_plain_vgg_count(k: int) -> int:
    convs = sum(_conv(i, o) + 2 * o for i, o in _VGG_CONVS[:13])
    return convs + 512 * 512 + 512 + 1024 + 512 * k + k


def _official_rn_att2_count(k: int, n: int = 18) -> int:
    def bottleneck(i: int, o: int) -> int:
        b = o // 4
        return 2 * i + i * b + 2 * b + 9 * b * b + 2 * b + b * o + (i * o if i != o else 0)

    body = _conv(3, 16, bias=False)
    for i, o in ((16, 64), (64, 128), (128, 256)):
        body += bottleneck(i, o) + (n - 1) * bottleneck(o, o)
    g = 512 + _conv(256, 256) + 512 + 256 * 256 + 256
    attention = (512 + 256 * 128 + 128 + 129) + 257
    return body + g + attention + 256 + 512 + 384 * k + k


OFFICIAL_COUNTS = [  # (model fields, pinned count), each also equal to the derivation above.
    (dict(num_taps=3, projection="down", num_classes=100), 19_971_751, "att3 C100"),
    (dict(num_taps=3, projection="down", num_classes=10), 19_856_461, "att3 C10"),
    (dict(num_taps=2, num_classes=100), 19_813_030, "att2 C100"),
    (dict(num_taps=2, num_classes=10), 19_720_780, "att2 C10"),
    (dict(num_taps=0, num_classes=100), 15_038_116, "vgg_bn_drop C100"),
    (dict(num_taps=0, num_classes=200), 15_089_416, "vgg_bn_drop CUB"),
    (dict(backbone="resnet", num_taps=2, projection="down", num_classes=100), 2_430_134, "RN"),
]


def _derived(fields: dict) -> int:
    k = fields["num_classes"]
    if fields.get("backbone") == "resnet":
        return _official_rn_att2_count(k)
    if fields["num_taps"] == 0:
        return _official_plain_vgg_count(k)
    return _official_vgg_att_count(fields["num_taps"], k)


def _config(**model_fields):
    config = default.get_config()
    for field, value in model_fields.items():
        config.model[field] = value
    return config


def _abstract_params(model, size: int = 32):
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)["params"]


@pytest.mark.parametrize(
    "fields, count, name", OFFICIAL_COUNTS, ids=[c[2] for c in OFFICIAL_COUNTS]
)
def test_official_preset_has_the_parameter_count_of_the_lua_model(fields, count, name):
    assert _derived(fields) == count, name  # The hand derivation and the pinned number agree.
    model = create_model(_config(preset="official", **fields))
    params = _abstract_params(model)
    assert sum(x.size for x in jax.tree.leaves(params)) == count


# --- Module attributes, read while tracing (no compute): dropout, eps, strides. ------------------


def _modules_seen(model, size: int = 32, train: bool = True) -> list[tuple[str, nn.Module]]:
    """(path, module) of every module called in one traced training forward pass."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            seen.append(("/".join(context.module.path), context.module))
        return next_fun(*args, **kwargs)

    images = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda v: model.apply(
                v,
                images,
                train=train,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(1)},
            ),
            variables,
        )
    return seen


def test_official_vgg_has_the_lua_dropouts_and_batch_norm_eps_and_the_reference_none():
    official = _modules_seen(create_model(_config(preset="official", projection="down")))
    dropouts = {path: m.rate for path, m in official if isinstance(m, nn.Dropout)}
    # Lua: ConvBNReLU(3,64):add(nn.Dropout(0.3)), then 0.4 after conv3, 5, 6, 8, 9, 11, 12, 14,
    # 15 (none after a tapped layer); Dropout(0.5) before g's Linear, on g before the
    # down-projection (1_vgg_atten.lua) and on each g_a (vgg_match.lua).
    expected = {f"conv{i}/Dropout_0": 0.4 for i in (3, 5, 6, 8, 9, 11, 12, 14, 15)}
    expected["conv1/Dropout_0"] = 0.3
    expected["Dropout_0"] = 0.5
    expected["head/estimator_att1/Dropout_0"] = 0.5
    expected.update({f"head/Dropout_{i}": 0.5 for i in range(3)})
    assert dropouts == expected
    eps = {path: m.epsilon for path, m in official if isinstance(m, nn.BatchNorm)}
    assert {eps[f"conv{i}/BatchNorm_0"] for i in range(1, 16)} == {1e-3}  # (n, 1e-3)
    one_d = ["head/estimator_att1/global_bn"] + [f"head/descriptor_bn_att{i}" for i in (1, 2, 3)]
    assert {eps[p] for p in one_d} == {1e-5}  # nn.BatchNormalization(n): Torch's default.
    assert len(eps) == 15 + 4

    reference = _modules_seen(create_model(_config()))
    assert not [p for p, m in reference if isinstance(m, nn.Dropout)]
    assert {m.epsilon for _, m in reference if isinstance(m, nn.BatchNorm)} == {1e-5}


def test_official_resnet_strides_the_first_1x1_and_the_reference_the_3x3():
    strides = {}
    for preset in ("reference", "official"):
        fields = dict(backbone="resnet", depth=11, num_taps=2, projection="down", width=0.25)
        seen = _modules_seen(create_model(_config(preset=preset, **fields)))
        convs = {p: m.strides for p, m in seen if isinstance(m, nn.Conv)}
        strides[preset] = [convs[f"stage2_block1/{c}"] for c in ("conv1", "conv2", "shortcut")]
        dropouts = sorted(m.rate for _, m in seen if isinstance(m, nn.Dropout))
        if preset == "official":  # g: 0.4 after its conv, 0.5 before its Linear and on g for
            # the down-projection (3.2_atten.lua); 0.3 on each g_a (4_match_..._indep.lua).
            assert dropouts == [0.3, 0.3, 0.4, 0.5, 0.5]
            assert {m.epsilon for p, m in seen if p == "global_bn"} == {1e-3}
        else:
            assert dropouts == []
    assert strides["reference"] == [1, 2, 2]
    assert strides["official"] == [2, 1, 2]


# --- Initialisation. ---------------------------------------------------------------------------


def _init_params(model, size: int = 32):
    return model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]  # Eager: fast.


def test_initialisers_of_each_preset_are_those_of_its_source():
    fields = dict(width=1 / 8, num_classes=10, conv_impl="xla")
    ref = _init_params(create_model(_config(**fields)))
    off = _init_params(create_model(_config(preset="official", projection="down", **fields)))
    # conv9: 3x3, 64 -> 64 at width 1/8 (36,864 weights).
    fan_in = fan_out = 9 * 64
    ref_kernel = np.asarray(ref["conv9"]["Conv_0"]["kernel"])
    bound = np.sqrt(2.0) * np.sqrt(6.0 / (fan_in + fan_out))  # xavier_uniform_(gain=sqrt(2))
    assert np.abs(ref_kernel).max() <= bound
    assert np.std(ref_kernel) == pytest.approx(bound / np.sqrt(3.0), rel=0.02)
    off_kernel = np.asarray(off["conv9"]["Conv_0"]["kernel"])  # MSRinit: N(0, 2 / (9 * out))
    assert np.std(off_kernel) == pytest.approx(np.sqrt(2.0 / fan_out), rel=0.02)
    assert np.abs(off_kernel).max() > np.sqrt(3.0) * np.std(off_kernel)  # Normal, not uniform.
    for params in (ref, off):
        assert not np.any(np.asarray(params["conv9"]["Conv_0"]["bias"]))  # Zero conv biases.
        gamma = np.concatenate(
            [np.asarray(params[f"conv{i}"]["BatchNorm_0"]["scale"]) for i in (8, 9, 10)]
        )
        assert (
            gamma.min() >= 0 and gamma.max() <= 1 and gamma.mean() == pytest.approx(0.5, abs=0.05)
        )
        assert not np.any(np.asarray(params["conv9"]["BatchNorm_0"]["bias"]))
    # u and the projections: Xavier-uniform gain sqrt(2) (reference) ...
    u = np.asarray(ref["head"]["estimator_att2"]["u"])  # [64, 1]: fan_in 64, fan_out 1
    assert np.abs(u).max() <= np.sqrt(2.0) * np.sqrt(6.0 / 65)
    assert np.abs(u).max() > np.sqrt(6.0 / 65)  # Wider than lecun-normal's would be.
    project = np.asarray(ref["head"]["estimator_att1"]["project_local"]["kernel"])  # 32 -> 64
    assert np.abs(project).max() <= np.sqrt(2.0) * np.sqrt(6.0 / (32 + 64))
    assert np.std(project) == pytest.approx(np.sqrt(4.0 / (32 + 64)), rel=0.05)
    assert not np.any(np.asarray(ref["head"]["classifier"]["bias"]))
    # ... He-normal over a fan-out of 1 with a zero bias, and Torch's Linear default (official).
    u = np.concatenate([np.asarray(off["head"][f"estimator_att{i}"]["u"]) for i in (1, 2, 3)])
    assert np.std(u) == pytest.approx(np.sqrt(2.0), rel=0.15)
    assert not np.any(np.asarray(off["head"]["estimator_att2"]["u_bias"]))
    for layer, fan in (("classifier", 32 + 64 + 64), ("global_feature", 64)):
        leaves = off["head"][layer] if layer == "classifier" else off[layer]
        limit = 1.0 / np.sqrt(fan)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight and bias.
        kernel, bias = np.asarray(leaves["kernel"]), np.asarray(leaves["bias"])
        assert 0.9 * limit < np.abs(kernel).max() <= limit
        assert 0 < np.abs(bias).max() <= limit
    assert "u_bias" not in ref["head"]["estimator_att2"]


# --- The indep head and dropout, on tiny networks. ---------------------------------------------


def test_indep_sums_log_softmax_for_two_levels_and_raw_logits_for_three():
    rng = np.random.default_rng(0)
    z = [jnp.asarray(rng.normal(size=(4, 10)), jnp.float32) for _ in range(3)]
    two = heads.combine_indep(z[:2])
    np.testing.assert_allclose(
        two, jax.nn.log_softmax(z[0]) + jax.nn.log_softmax(z[1]), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(heads.combine_indep(z), z[0] + z[1] + z[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset", ["reference", "official"])
def test_indep_head_returns_the_combination_of_its_classifiers(preset):
    head = heads.AttentionHead(
        num_classes=10, attention=AttentionSpec(num_taps=3, head="indep"), preset=preset
    )
    rng = np.random.default_rng(1)
    taps = {
        name: jnp.asarray(rng.normal(size=(2, size, size, width)), jnp.float32)
        for name, size, width in (("att1", 8, 8), ("att2", 4, 16), ("att3", 2, 16))
    }
    g = jnp.asarray(rng.normal(size=(2, 16)), jnp.float32)
    variables = head.init(jax.random.key(0), taps, g)
    (logits, _), state = head.apply(
        variables, taps, g, capture_intermediates=True, mutable=["intermediates"]
    )
    per_level = [state["intermediates"][f"classifier_att{i}"]["__call__"][0] for i in (1, 2, 3)]
    np.testing.assert_allclose(logits, sum(per_level), rtol=1e-5, atol=1e-5)
    two = heads.AttentionHead(
        num_classes=10, attention=AttentionSpec(num_taps=2, head="indep"), preset=preset
    )
    taps.pop("att1")
    variables = two.init(jax.random.key(0), taps, g)
    (logits, _), state = two.apply(
        variables, taps, g, capture_intermediates=True, mutable=["intermediates"]
    )
    per_level = [state["intermediates"][f"classifier_att{i}"]["__call__"][0] for i in (2, 3)]
    expected = sum(jax.nn.log_softmax(z) for z in per_level)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_official_dropout_acts_in_training_only():
    images = jnp.asarray(np.random.default_rng(2).normal(size=(4, 32, 32, 3)), jnp.float32)
    model = create_model(
        _config(preset="official", projection="down", width=1 / 16, num_classes=10)
    )

    @jax.jit
    def outputs(images, keys):
        variables = model.init(jax.random.key(0), images)

        def forward(key, train):
            out = model.apply(
                variables, images, train=train, rngs={"dropout": key}, mutable=["batch_stats"]
            )
            return out[0]

        trained = jax.vmap(lambda key: forward(key, True))(keys)
        evaluated = jax.vmap(lambda key: forward(key, False))(keys)
        return trained, evaluated

    keys = jnp.stack([jax.random.key(k) for k in (0, 1, 0)])
    (a, b, a_again), (eval_a, eval_b, _) = outputs(images, keys)
    np.testing.assert_array_equal(a, a_again)  # The masks are a function of the key ...
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3  # ... and differ between keys.
    np.testing.assert_array_equal(eval_a, eval_b)  # Eval: no dropout, whatever the key.
    # (The reference preset has no Dropout module at all: see the module test above.)


# --- Training mechanics. -----------------------------------------------------------------------


def test_a_schedule_epoch_is_passes_per_epoch_passes():
    config = override(
        smoke.get_config(),
        passes_per_epoch=3,
        num_epochs=300,
        num_train_steps=-1,
        learning_rate=0.1,
        lr_decay_every_epochs=25,
        lr_decay_factor=0.5,
        warmup_epochs=1.0,
    )
    schedule = train.learning_rate_schedule(config, steps_per_epoch=10)  # 10 steps a pass.
    assert train.schedule_steps_per_epoch(config, 10) == 30
    assert train.total_train_steps(config, 10) == 300 * 30
    assert float(schedule(15)) == pytest.approx(0.05)  # Warm-up over 1 epoch = 30 steps.
    assert float(schedule(749)) == pytest.approx(0.1)
    assert float(schedule(750)) == pytest.approx(0.05)  # Epoch 25 = pass 75.
    assert float(schedule(275 * 30)) == pytest.approx(0.1 * 0.5**11)


def _sgd_updates(reset: bool, num_steps: int = 6) -> np.ndarray:
    config = override(
        default.get_config(),
        momentum=0.9,
        weight_decay=0.0,
        reset_momentum_at_decay=reset,
    )
    schedule = optax.piecewise_constant_schedule(1.0, {3: 0.1})
    tx = train.create_optimizer(config, schedule)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for _ in range(num_steps):
        updates, state = update({"w": jnp.ones(())}, state, params)
        out.append(float(updates["w"]))
    return np.asarray(out)


def test_momentum_is_zeroed_at_each_learning_rate_drop_only_when_asked():
    plain = _sgd_updates(reset=False)
    reset = _sgd_updates(reset=True)
    kept = [1.0, 1.9, 2.71, 0.1 * 3.439, 0.1 * 4.0951, 0.1 * 4.68559]
    fresh = [1.0, 1.9, 2.71, 0.1 * 1.0, 0.1 * 1.9, 0.1 * 2.71]  # A new trace at step 3.
    np.testing.assert_allclose(-plain, kept, rtol=1e-6)
    np.testing.assert_allclose(-reset, fresh, rtol=1e-6)


def test_dropout_run_resumed_from_a_checkpoint_ends_with_the_same_parameters(tmp_path):
    config = override(
        smoke.get_config(),
        **{
            "model.preset": "official",
            "model.projection": "down",
            "seed": 3,
        },
    )
    model = create_model(config)
    schedule = train.learning_rate_schedule(config, steps_per_epoch=4)
    init = jax.jit(functools.partial(train.create_train_state, config, model, schedule=schedule))
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": jnp.asarray(rng.normal(size=(16, 32, 32, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, size=16), jnp.int32),
        }
        for _ in range(4)
    ]
    uninterrupted = init(jax.random.key(config.seed))
    step = (  # Compiled once, ahead of time: every call below runs this executable.
        jax.jit(functools.partial(train.train_step, schedule=schedule, seed=config.seed))
        .lower(uninterrupted, batches[0])
        .compile()
    )
    for batch in batches:
        uninterrupted, _ = step(uninterrupted, batch)

    first = init(jax.random.key(config.seed))
    for batch in batches[:2]:
        first, _ = step(first, batch)
    manager = checkpointing.create_manager(tmp_path, keep=2, every_steps=2)
    checkpointing.save(manager, 2, first, force=True)
    manager.wait_until_finished()
    del first  # The run is killed here; a new process restores into a fresh state.
    resumed, start_step, _ = checkpointing.restore_latest(manager, init(jax.random.key(99)))
    assert start_step == 2 and int(resumed.step) == 2
    for batch in batches[2:]:
        resumed, _ = step(resumed, batch)
    for a, b in zip(
        jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model.preset": "offical"}, "config.model.preset='offical' .*did you mean 'official'"),
        ({"passes_per_epoch": 0}, "config.passes_per_epoch=0 must be at least 1 pass"),
        (
            {"model.preset": "official", "model.batch_norm": False},
            "config.model.batch_norm=False is not possible with config.model.preset='official'",
        ),
        (
            {"model.preset": "official", "model.backbone": "agcnn"},
            "config.model.preset='official' does not exist for config.model.backbone='agcnn'",
        ),
    ],
)
def test_preset_fields_are_validated_naming_field_value_and_fix(fields, message):
    with pytest.raises(validation.ConfigError, match=message) as error:
        validation.check_config(override(default.get_config(), **fields))
    assert "--config." in str(error.value)  # The fix, as a flag.


def test_a_workdir_from_before_the_presets_resumes_as_reference_and_refuses_official(tmp_path):
    config = smoke.get_config()
    run_dir = rundir.RunDir.at(str(tmp_path))
    run_dir.create()
    old = json.loads(config.to_json_best_effort())  # A config.json written before issue 15.
    del old["model"]["preset"], old["reset_momentum_at_decay"], old["passes_per_epoch"]
    run_dir.config_file.write_text(json.dumps(old))
    run_dir.check_compatible(config)  # Its defaults: the reference preset, no reset.
    for field, value in (("model.preset", "official"), ("reset_momentum_at_decay", True)):
        with pytest.raises(rundir.RunDirError, match=f"config.{field}: .* -> {value!r}"):
            run_dir.check_compatible(override(smoke.get_config(), **{field: value}))
