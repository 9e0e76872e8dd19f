"""config.remat: the same network, parameters and gradients, with blocks recomputed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltpa_jax.configs import default
from ltpa_jax.models import create_model


def tiny_config(backbone: str, remat: str):
    config = default.get_config()
    config.model.num_classes = 10
    config.model.conv_impl = "xla"
    config.remat = remat
    if backbone == "resnet":
        config.model.backbone, config.model.depth, config.model.width = "resnet", 11, 1 / 4
        config.model.num_taps, config.model.projection = 2, "down"
    else:
        config.model.width = 1 / 16
    return config


def loss_and_grads(config, variables, images, labels):
    model = create_model(config)

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        one_hot = jax.nn.one_hot(labels, 10)
        return -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(logits), -1)), updates

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    return grad_fn(variables["params"]), jax.make_jaxpr(grad_fn)(variables["params"])


@pytest.mark.parametrize("backbone", ["vgg", "resnet"])
def test_remat_changes_memory_not_results(backbone):
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    labels = jnp.arange(4)
    base = create_model(tiny_config(backbone, "none"))
    variables = base.init(jax.random.key(0), images, train=False)
    ((loss, updates), grads), jaxpr = loss_and_grads(
        tiny_config(backbone, "none"), variables, images, labels
    )
    assert "remat" not in str(jaxpr) and "checkpoint" not in str(jaxpr)
    for mode in ("full", "keep_conv"):
        config = tiny_config(backbone, mode)
        again = create_model(config).init(jax.random.key(0), images, train=False)
        assert jax.tree.structure(again) == jax.tree.structure(variables)  # Same names.
        ((loss_r, updates_r), grads_r), jaxpr_r = loss_and_grads(config, variables, images, labels)
        assert "checkpoint" in str(jaxpr_r) or "remat" in str(jaxpr_r)
        np.testing.assert_allclose(loss_r, loss, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        for a, b in zip(jax.tree.leaves(updates_r), jax.tree.leaves(updates), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_remat_names_the_choices():
    with pytest.raises(ValueError, match=r"remat='some'.*'none', 'full', 'keep_conv'"):
        create_model(tiny_config("vgg", "some"))
