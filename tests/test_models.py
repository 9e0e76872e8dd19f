"""Tests for ltpa_jax.models: parameter counts (spec section 4), every variant's forward and
backward pass, input-size adaptation, half precision and config validation.

Full-size networks are only traced (`jax.eval_shape`, no compute); everything that runs does so
at width 1/16 with tiny batches, to keep the suite fast on two slow CPU cores.
"""

import dataclasses
import functools
import hashlib
import json
import math
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltpa_jax import create_model, predict
from ltpa_jax.configs import default
from ltpa_jax.models import BACKBONES, AttentionSpec, Backbone

WIDTH = 1 / 16
# The tests only check that compiled programs run and give finite values, so XLA's backend
# optimisations are not worth their compile time here (it roughly halves it).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _config(half_precision: bool = False, **model_overrides):
    config = default.get_config()
    config.half_precision = half_precision
    for field, value in model_overrides.items():
        config.model[field] = value
    return config


def _num_params(params) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def _abstract_variables(model, images_shape):
    """Variables of `model.init` as ShapeDtypeStructs (no compute)."""
    images = jax.ShapeDtypeStruct(images_shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def _variables(model, images_shape, seed: int = 0):
    """{"params", "batch_stats"} with the shapes of `model.init`, filled without compiling init.

    Kernels get a He-like scale, biases and running means zeros, BN scales and running
    variances ones: enough for forward/backward checks, and far cheaper than compiling the
    initialisers on these machines.
    """
    abstract = _abstract_variables(model, images_shape)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if name in ("['scale']", "['var']"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if leaf.ndim < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        std = math.sqrt(2.0 / math.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)

    return {
        col: jax.tree_util.tree_map_with_path(fill, abstract[col])
        for col in ("params", "batch_stats")
        if col in abstract
    }


def _train_step_outputs(model, variables, images, labels):
    """Jitted loss, logits, new batch stats and gradients w.r.t. params in train mode."""

    def loss_fn(params, batch_stats):
        logits, new_state = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, new_state["batch_stats"])

    step = jax.value_and_grad(loss_fn, has_aux=True)
    args = (variables["params"], variables.get("batch_stats", {}))
    (loss, (logits, new_stats)), grads = jax.jit(step).lower(*args).compile(FAST_COMPILE)(*args)
    return loss, logits, new_stats, grads


# --- Parameter counts (spec section 4), full size, no compute. ------------------------------

PARAM_COUNTS = [
    # (num_taps, num_classes, image_size, trainable parameters)
    (3, 10, 32, 19_855_434),
    (3, 100, 32, 19_993_764),
    (3, 200, 32, 20_147_464),
    (0, 10, 32, 19_712_586),
    (0, 100, 32, 19_758_756),
    (0, 200, 32, 19_810_056),
    (3, 100, 224, 32_576_676),
    (3, 200, 224, 32_730_376),
]


@pytest.mark.parametrize(
    "num_taps, num_classes, size, expected",
    PARAM_COUNTS,
    ids=[f"{'att3' if t else 'plain'}-{c}classes-{s}px" for t, c, s, _ in PARAM_COUNTS],
)
def test_parameter_count_matches_reference(num_taps, num_classes, size, expected):
    model = create_model(_config(num_taps=num_taps, num_classes=num_classes))
    variables = _abstract_variables(model, (1, size, size, 3))
    assert _num_params(variables["params"]) == expected


def test_default_config_is_the_reference_preset():
    m = default.get_config().model
    assert (m.backbone, m.num_taps, m.compatibility, m.normalization) == ("vgg", 3, "pc", "softmax")
    assert (m.tap_position, m.projection, m.head, m.batch_norm) == ("before", "up", "concat", True)
    assert (m.width, m.preset) == (1.0, "reference")


@pytest.mark.parametrize("size, kernel", [(32, 1), (64, 2), (224, 7)])
def test_global_feature_kernel_adapts_to_input_size(size, kernel):
    model = create_model(_config())
    params = _abstract_variables(model, (1, size, size, 3))["params"]
    assert params["global_feature"]["kernel"].shape == (kernel, kernel, 512, 512)
    assert params["global_feature"]["bias"].shape == (512,)


# --- Parameters stay those of the recorded networks (old checkpoints restore). -----------------

# tests/model_parameters.json was recorded from the models before `AttentionSpec` (issue 12).
RECORDED = json.loads((Path(__file__).parent / "model_parameters.json").read_text())
RECORDED_NETWORKS = {  # Name in the record -> model-section overrides.
    "vgg_att3_concat_pc_up": {},
    "vgg_plain_no_bn": dict(num_taps=0, batch_norm=False),
    "vgg_att2_indep_dp_down_after": dict(
        num_taps=2,
        head="indep",
        compatibility="dp",
        projection="down",
        tap_position="after",
        normalization="sigmoid",
    ),
    "resnet164_att2_concat_pc_down": dict(backbone="resnet", num_taps=2, projection="down"),
    "resnet164_plain": dict(backbone="resnet", num_taps=0),
    "resnet164_att1_indep_dp_up": dict(
        backbone="resnet", num_taps=1, head="indep", compatibility="dp", projection="up"
    ),
}
RECORDED_SMALL = {  # Networks whose initial values were recorded.
    "vgg_att3_concat_pc_up": dict(width=0.0625),
    "vgg_att2_indep_dp_down_after": dict(
        RECORDED_NETWORKS["vgg_att2_indep_dp_down_after"], width=0.0625
    ),
    "resnet11_att2_concat_pc_down": dict(
        backbone="resnet", depth=11, num_taps=2, projection="down", width=0.25
    ),
}


def _init_shapes(model_overrides: dict) -> dict[str, tuple[int, ...]]:
    """Path -> shape of every leaf of `model.init` at 32x32 (params, batch stats, sown maps)."""
    variables = _abstract_variables(create_model(_config(**model_overrides)), (1, 32, 32, 3))
    return {
        jax.tree_util.keystr(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
    }


def test_default_vgg_att3_has_the_recorded_parameter_names_and_shapes():
    recorded = {
        path: tuple(shape) for path, shape in RECORDED["shapes"]["vgg_att3_concat_pc_up"].items()
    }
    assert _init_shapes({}) == recorded


@pytest.mark.parametrize("name", sorted(RECORDED_NETWORKS))
def test_network_has_the_recorded_parameter_names_and_shapes(name):
    shapes = _init_shapes(RECORDED_NETWORKS[name])
    text = "\n".join(f"{path} {shape}" for path, shape in sorted(shapes.items()))
    expected = RECORDED["shape_digests"][name]
    assert len(shapes) == expected["num_leaves"]
    assert hashlib.sha256(text.encode()).hexdigest() == expected["sha256"]


@pytest.mark.parametrize("name", sorted(RECORDED_SMALL))
def test_same_seed_gives_the_recorded_initial_parameters(name):
    model = create_model(_config(**RECORDED_SMALL[name]))
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(jnp.zeros((1, 32, 32, 3)))
    sums = {
        jax.tree_util.keystr(path): [
            float(np.sum(np.asarray(leaf, np.float64))),
            float(np.sum(np.abs(np.asarray(leaf, np.float64)))),
        ]
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
    }
    recorded = RECORDED["init_sums"][name]
    assert sorted(sums) == sorted(recorded)
    for path, value in sums.items():
        np.testing.assert_allclose(value, recorded[path], rtol=1e-6, atol=1e-6, err_msg=path)


# --- The attention spec. ------------------------------------------------------------------------


def test_attention_spec_is_built_once_from_the_model_section_and_shared_with_the_head():
    config = _config(num_taps=2, compatibility="dp", normalization="sigmoid", head="indep")
    config.model.tap_position, config.model.projection = "after", "down"
    model = create_model(config)
    expected = AttentionSpec(
        num_taps=2,
        compatibility="dp",
        normalization="sigmoid",
        tap_position="after",
        projection="down",
        head="indep",
    )
    assert model.attention == expected == AttentionSpec.from_config(config.model)
    assert model.tap_names == ("att2", "att3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.attention.num_taps = 3


def test_backbone_registry_has_the_backbone_literals():
    assert tuple(BACKBONES) == typing.get_args(Backbone)


# --- Every variant builds and trains (width 1/16, 32x32, batch 2). -----------------------------

# A covering set: every value of every field appears at least once, and the width-mismatch
# handling (3 taps) is exercised with both projections and both compatibilities.
VARIANTS = [
    dict(num_taps=0),  # plain VGG
    dict(
        num_taps=1,
        compatibility="dp",
        normalization="sigmoid",
        tap_position="after",
        head="indep",
        batch_norm=False,
    ),
    dict(num_taps=2, compatibility="pc", normalization="sigmoid", head="indep"),
    dict(num_taps=2, compatibility="dp", tap_position="after", batch_norm=False),
    dict(num_taps=3),  # the reference preset
    dict(num_taps=3, compatibility="dp", tap_position="after", projection="down"),
    dict(
        num_taps=3, normalization="sigmoid", tap_position="after", head="indep", projection="down"
    ),
    dict(num_taps=3, compatibility="dp", normalization="sigmoid", head="indep", batch_norm=False),
]


def _variant_id(overrides: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in overrides.items())


@pytest.mark.parametrize("overrides", VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
def test_variant_runs_forward_and_backward_under_jit(overrides, record_property):
    config = _config(width=WIDTH, num_classes=10, **overrides)
    model = create_model(config)
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    labels = jnp.array([3, 7])
    variables = _variables(model, images.shape)
    num_params = _num_params(variables["params"])
    record_property("num_params_width_1_16", num_params)
    print(f"{_variant_id(overrides)}: {num_params} parameters at width {WIDTH}")

    loss, logits, new_stats, grads = _train_step_outputs(model, variables, images, labels)

    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.isfinite(loss)
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(optax.tree.norm(grads)) > 0
    if overrides.get("batch_norm", True):
        assert jax.tree.structure(new_stats) == jax.tree.structure(variables["batch_stats"])
        assert not np.allclose(
            new_stats["conv1"]["BatchNorm_0"]["mean"],
            variables["batch_stats"]["conv1"]["BatchNorm_0"]["mean"],
        )
    else:
        assert "batch_stats" not in variables
    head = grads.get("head", {})
    for name, estimator in head.items():
        if name.startswith("estimator_") and "u" in estimator:
            assert np.any(np.asarray(estimator["u"]) != 0), f"no gradient reaches {name}/u"


@pytest.mark.parametrize("num_taps", [0, 3], ids=["plain", "att3"])
def test_224_input_runs_forward_and_backward_at_reduced_width(num_taps):
    model = create_model(_config(width=WIDTH, num_classes=200, num_taps=num_taps))
    images = jax.random.normal(jax.random.key(2), (1, 224, 224, 3))
    variables = _variables(model, images.shape)
    assert variables["params"]["global_feature"]["kernel"].shape[:2] == (7, 7)
    loss, logits, _, grads = _train_step_outputs(model, variables, images, jnp.array([5]))
    assert logits.shape == (1, 200)
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# --- Half precision. -----------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["concat", "indep"])
def test_half_precision_computes_in_bfloat16_with_float32_logits_and_params(head):
    model = create_model(_config(half_precision=True, width=WIDTH, head=head))
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = _abstract_variables(model, images.shape)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    logits, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        images,
    )
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["conv1"]["__call__"][0].dtype == jnp.bfloat16
    assert state["intermediates"]["global_feature"]["__call__"][0].dtype == jnp.bfloat16


@functools.cache
def _half_precision_eval_logits(conv_impl: str = "auto"):
    config = _config(half_precision=True, width=WIDTH, num_classes=10, conv_impl=conv_impl)
    model = create_model(config)
    images = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
    variables = _variables(model, images.shape)
    return jax.jit(model.apply).lower(variables, images).compile(FAST_COMPILE)(variables, images)


def test_half_precision_forward_runs_under_jit_with_float32_logits():
    logits = _half_precision_eval_logits()
    assert logits.dtype == jnp.float32 and logits.shape == (2, 10)


def test_half_precision_eval_logits_are_finite_with_the_matmul_convolution():
    assert np.all(np.isfinite(_half_precision_eval_logits("matmul")))


@pytest.mark.xfail(
    jax.default_backend() == "cpu",
    reason="XLA CPU (jaxlib 0.12.0.1) gives NaN logits for this bfloat16 network's jitted eval "
    "pass with its own convolution (eager mode, and the matmul convolution, are finite); "
    "validation.check_config refuses that combination. XPASS here means a fixed jaxlib.",
    strict=False,
)
def test_half_precision_eval_logits_are_finite_with_xla_convolution():
    assert np.all(np.isfinite(_half_precision_eval_logits("xla")))


# --- Config validation. -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone", "alexnet"),
        ("num_taps", 4),
        ("num_taps", -1),
        ("compatibility", "xx"),
        ("head", "xx"),
        ("normalization", "xx"),
        ("tap_position", "xx"),
        ("projection", "xx"),
        ("width", 0.0),
        ("num_classes", 0),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"model.{field}") as info:
        create_model(_config(**{field: value}))
    assert str(value) in str(info.value)


def test_input_side_not_multiple_of_32_is_rejected_by_inference_api():
    model = create_model(_config(width=WIDTH))
    variables = _abstract_variables(model, (1, 32, 32, 3))
    with pytest.raises(ValueError, match="multiple of 32"):
        predict(model, variables, jnp.zeros((1, 48, 48, 3)))


def test_bfloat16_by_default_on_accelerators_only(monkeypatch):
    from ltpa_jax.models import uses_bfloat16

    config = default.get_config()
    assert not uses_bfloat16(config)  # The CPU keeps float32.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert uses_bfloat16(config)
    config.half_precision_on_accelerators = False
    assert not uses_bfloat16(config)
    config.half_precision = True
    assert uses_bfloat16(config)
