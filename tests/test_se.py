"""Squeeze-and-excitation (models/se.py) against NumPy; its place in the VGG and the ResNet;
its channel weights through `inference.channel_weights`."""

import jax
import jax.numpy as jnp
import numpy as np

from ltpa_jax import inference
from ltpa_jax.configs import default
from ltpa_jax.models import create_model, se


def reference(x, w1, b1, w2, b2):
    z = x.mean(axis=(1, 2))
    s = 1 / (1 + np.exp(-(np.maximum(z @ w1 + b1, 0) @ w2 + b2)))
    return x * s[:, None, None, :], s


def test_squeeze_excitation_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4, 8)).astype(np.float32)
    module = se.SqueezeExcitation(ratio=4)
    variables = module.init(jax.random.key(0), x)
    y, state = module.apply(variables, x, mutable=["channel_weights"])
    p = jax.tree.map(np.asarray, variables["params"])
    args = (p["reduce"]["kernel"], p["reduce"]["bias"], p["expand"]["kernel"], p["expand"]["bias"])
    assert args[0].shape == (8, 2) and args[2].shape == (2, 8)
    y_ref, s_ref = reference(x.astype(np.float64), *args)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["channel_weights"]["weights"][0], s_ref, rtol=1e-5)
    y_pure, s_pure = se.squeeze_excitation(x, *args)
    np.testing.assert_allclose(y_pure, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_pure, s_ref, rtol=1e-5)
    assert se.reduced_channels(8, 16) == 1  # Narrow layers keep a bottleneck of 1.


def _config(backbone: str):
    c = default.get_config()
    c.model.num_classes = 10
    c.model.width = 1 / 16
    c.model.backbone = backbone
    c.model.squeeze_excitation = 4
    if backbone == "resnet":
        c.model.depth = 11
        c.model.num_taps = 0
    return c


def test_se_blocks_follow_every_stage_layer_and_their_weights_come_out():
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
    resnet = create_model(_config("resnet"))
    params = jax.eval_shape(lambda x: resnet.init(jax.random.key(0), x), images)["params"]
    for stage in (1, 2, 3):
        block = params[f"stage{stage}_block1"]
        assert block["se"]["expand"]["kernel"].shape[-1] == block["conv3"]["kernel"].shape[-1]

    vgg = create_model(_config("vgg"))
    variables = jax.jit(vgg.init)(jax.random.key(0), images)
    names = [f"conv{i}_se" for i in range(1, 14)]
    assert set(names) <= set(variables["params"]) and "conv14_se" not in variables["params"]
    weights = jax.jit(inference.channel_weights, static_argnums=0)(vgg, variables, images)
    assert sorted(weights) == sorted(names)
    assert weights["conv13_se"].shape == (2, 32)
    assert ((weights["conv1_se"] > 0) & (weights["conv1_se"] < 1)).all()
