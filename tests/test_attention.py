"""Tests for ltpa_jax.attention: the estimator math against NumPy (spec section 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltpa_jax.attention import (
    AttentionEstimator,
    attend,
    compatibility_dp,
    compatibility_pc,
    normalize_attention,
)

B, H, W, C = 2, 5, 4, 6
RTOL = 1e-5
ATOL = 1e-6


def _inputs(seed: int = 0, c_local: int = C, c_global: int = C):
    """Random local features [B, H, W, c_local], global feature [B, c_global] and u [c_local]."""
    rng = np.random.default_rng(seed)
    local = rng.normal(size=(B, H, W, c_local)).astype(np.float32)
    global_ = rng.normal(size=(B, c_global)).astype(np.float32)
    u = rng.normal(size=(c_local,)).astype(np.float32)
    return local, global_, u


def _np_softmax_over_space(scores: np.ndarray) -> np.ndarray:
    flat = scores.reshape(scores.shape[0], -1).astype(np.float64)
    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (flat / flat.sum(axis=1, keepdims=True)).reshape(scores.shape)


def _np_sigmoid(scores: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))


def test_compatibility_pc_matches_numpy():
    local, global_, u = _inputs()
    expected = np.zeros((B, H, W))
    for b in range(B):
        for i in range(H):
            for j in range(W):
                expected[b, i, j] = np.dot(u, local[b, i, j] + global_[b])
    got = compatibility_pc(jnp.asarray(local), jnp.asarray(global_), jnp.asarray(u))
    assert got.shape == (B, H, W)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_compatibility_dp_matches_numpy():
    local, global_, _ = _inputs()
    expected = np.zeros((B, H, W))
    for b in range(B):
        for i in range(H):
            for j in range(W):
                expected[b, i, j] = np.dot(local[b, i, j], global_[b])
    got = compatibility_dp(jnp.asarray(local), jnp.asarray(global_))
    assert got.shape == (B, H, W)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "method, reference", [("softmax", _np_softmax_over_space), ("sigmoid", _np_sigmoid)]
)
def test_normalize_attention_matches_numpy(method, reference):
    scores = np.random.default_rng(1).normal(size=(B, H, W)).astype(np.float32) * 3
    got = normalize_attention(jnp.asarray(scores), method)
    assert got.shape == (B, H, W)
    np.testing.assert_allclose(got, reference(scores), rtol=RTOL, atol=ATOL)


def test_softmax_maps_sum_to_one_over_space():
    scores = np.random.default_rng(2).normal(size=(B, H, W)).astype(np.float32) * 5
    a = normalize_attention(jnp.asarray(scores), "softmax")
    np.testing.assert_allclose(a.sum(axis=(1, 2)), np.ones(B), rtol=RTOL)
    assert np.all(np.asarray(a) >= 0)


def test_sigmoid_maps_lie_in_open_unit_interval():
    scores = np.random.default_rng(3).normal(size=(B, H, W)).astype(np.float32) * 5
    a = np.asarray(normalize_attention(jnp.asarray(scores), "sigmoid"))
    assert np.all(a > 0) and np.all(a < 1)


@pytest.mark.parametrize("method", ["softmax", "sigmoid"])
def test_attend_matches_numpy(method):
    local, _, _ = _inputs(4)
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(B, H, W)).astype(np.float32)
    a = _np_softmax_over_space(scores) if method == "softmax" else _np_sigmoid(scores)
    a = a.astype(np.float32)
    expected = np.zeros((B, C))
    for b in range(B):
        for i in range(H):
            for j in range(W):
                expected[b] += a[b, i, j] * local[b, i, j]
    if method == "sigmoid":  # spatial mean of a_i l_i (reference implementation)
        expected /= H * W
    got = attend(jnp.asarray(local), jnp.asarray(a), method)
    assert got.shape == (B, C)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method", ["softmax", "sigmoid"])
def test_pc_pipeline_gradients_are_finite_and_nonzero(method):
    local, global_, u = (jnp.asarray(x) for x in _inputs(6))

    def scalar(u, local):
        a = normalize_attention(compatibility_pc(local, global_, u), method)
        return jnp.sum(attend(local, a, method) ** 2)

    grad_u, grad_local = jax.grad(scalar, argnums=(0, 1))(u, local)
    for g in (grad_u, grad_local):
        assert np.all(np.isfinite(g))
        assert np.any(np.abs(np.asarray(g)) > 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: normalize_attention(s, "xx"),
        lambda s: attend(jnp.ones((B, H, W, C)), s, "xx"),
    ],
    ids=["normalize_attention", "attend"],
)
def test_unknown_method_fails_instead_of_using_another(call):
    # Outside the `Normalization` Literal is a programming error (configs are validated, see
    # test_validation.py): it fails loudly, naming the value, instead of falling through.
    with pytest.raises(AssertionError, match="'xx'"):
        call(jnp.zeros((B, H, W)))


def _apply_estimator(module: AttentionEstimator, c_local: int, c_global: int):
    local, global_, _ = _inputs(7, c_local, c_global)
    variables = module.init(jax.random.key(0), local, global_)
    return variables, module.apply(variables, local, global_)


@pytest.mark.parametrize("compatibility", ["pc", "dp"])
@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_estimator_output_shapes_for_equal_widths(compatibility, normalization):
    module = AttentionEstimator(compatibility=compatibility, normalization=normalization)
    variables, out = _apply_estimator(module, C, C)
    assert set(out) == {"descriptor", "scores", "attention"}
    assert out["descriptor"].shape == (B, C)
    assert out["scores"].shape == (B, H, W)
    assert out["attention"].shape == (B, H, W)
    assert all(v.dtype == jnp.float32 for v in out.values())
    params = variables.get("params", {})
    assert "project_local" not in params and "project_global" not in params


@pytest.mark.parametrize("compatibility", ["pc", "dp"])
def test_estimator_projection_up_maps_local_to_global_width(compatibility):
    module = AttentionEstimator(compatibility=compatibility, projection="up")
    variables, out = _apply_estimator(module, c_local=4, c_global=8)
    params = variables["params"]
    assert "project_local" in params and "project_global" not in params
    assert params["project_local"]["kernel"].shape == (1, 1, 4, 8)
    assert "bias" not in params["project_local"]  # 1x1 conv without bias (reference)
    assert out["descriptor"].shape == (B, 8)
    assert out["attention"].shape == (B, H, W)


@pytest.mark.parametrize("compatibility", ["pc", "dp"])
def test_estimator_projection_down_maps_global_to_local_width(compatibility):
    module = AttentionEstimator(compatibility=compatibility, projection="down")
    variables, out = _apply_estimator(module, c_local=4, c_global=8)
    params = variables["params"]
    assert "project_global" in params and "project_local" not in params
    assert params["project_global"]["kernel"].shape == (8, 4)
    assert out["descriptor"].shape == (B, 4)
    assert out["attention"].shape == (B, H, W)


def test_estimator_pc_learns_u():
    variables, _ = _apply_estimator(AttentionEstimator(compatibility="pc"), C, C)
    assert variables["params"]["u"].shape == (C, 1)


def test_estimator_dp_has_no_u_parameter():
    variables, _ = _apply_estimator(AttentionEstimator(compatibility="dp"), C, C)
    assert "u" not in variables.get("params", {})
    assert not jax.tree.leaves(variables.get("params", {}))  # no parameters at equal widths


def test_estimator_pc_matches_pure_functions():
    module = AttentionEstimator(compatibility="pc", normalization="softmax")
    local, global_, _ = _inputs(8)
    variables = module.init(jax.random.key(0), local, global_)
    out = module.apply(variables, local, global_)
    u = np.asarray(variables["params"]["u"])[:, 0]
    scores = np.einsum("bhwc,c->bhw", local + global_[:, None, None, :], u)
    a = _np_softmax_over_space(scores)
    np.testing.assert_allclose(out["scores"], scores, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(out["attention"], a, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        out["descriptor"], np.einsum("bhwc,bhw->bc", local, a), rtol=RTOL, atol=1e-5
    )


@pytest.mark.parametrize(
    "field, value", [("compatibility", "xx"), ("projection", "xx"), ("normalization", "xx")]
)
def test_estimator_fails_on_a_choice_outside_its_literal(field, value):
    module = AttentionEstimator(**{field: value})
    local, global_, _ = _inputs(9, 4, 8)  # C_l != C_g: the projection is read too.
    with pytest.raises(AssertionError, match=f"'{value}'"):
        module.init(jax.random.key(0), local, global_)


@pytest.mark.parametrize("projection", ["up", "down"])
def test_estimator_works_under_jit(projection):
    module = AttentionEstimator(compatibility="pc", projection=projection)
    local, global_, _ = _inputs(10, 4, 8)
    variables = module.init(jax.random.key(0), local, global_)
    eager = module.apply(variables, local, global_)
    jitted = jax.jit(module.apply)(variables, local, global_)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=RTOL, atol=ATOL)
