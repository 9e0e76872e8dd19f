"""Local self-attention (models/local_attention.py) against a NumPy reference with relative
positions; its place in the VGG and the ResNet; its maps through `inference.attention_maps`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltpa_jax import inference
from ltpa_jax.configs import default
from ltpa_jax.models import create_model, local_attention


def reference(q, k, v, rows, columns, heads):
    """Ramachandran et al.'s equation, one query and one neighbour at a time (float64)."""
    b, h, w, c = q.shape
    kernel = rows.shape[0]
    r, d = kernel // 2, c // heads
    y = np.zeros((b, h, w, c))
    weights = np.zeros((b, h, w, heads, kernel * kernel))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                for head in range(heads):
                    part = slice(head * d, (head + 1) * d)
                    logits, values, slots = [], [], []
                    for a in range(i - r, i + r + 1):
                        for bb in range(j - r, j + r + 1):
                            if not (0 <= a < h and 0 <= bb < w):
                                continue
                            rel = np.concatenate([rows[a - i + r, head], columns[bb - j + r, head]])
                            query = q[n, i, j, part]
                            logits.append(query @ (k[n, a, bb, part] + rel) / np.sqrt(d))
                            values.append(v[n, a, bb, part])
                            slots.append((a - i + r) * kernel + (bb - j + r))
                    p = np.exp(np.array(logits) - max(logits))
                    p /= p.sum()
                    y[n, i, j, part] = p @ np.array(values)
                    weights[n, i, j, head, slots] = p
    return y, weights


@pytest.mark.parametrize("dense", [True, False])
def test_local_self_attention_matches_numpy_with_relative_positions(dense, monkeypatch):
    if not dense:  # The window-by-window computation of large maps, on a small one.
        monkeypatch.setattr(local_attention, "DENSE_MAX_POSITIONS", 0)
    rng = np.random.default_rng(0)
    b, h, w, c, heads, kernel = 2, 5, 4, 8, 2, 3
    q, k, v = (rng.standard_normal((b, h, w, c)).astype(np.float32) for _ in range(3))
    rows, columns = (rng.standard_normal((kernel, heads, c // heads // 2)) for _ in range(2))
    rows, columns = rows.astype(np.float32), columns.astype(np.float32)
    y, weights = local_attention.local_self_attention(q, k, v, rows, columns, heads)
    y_ref, weights_ref = reference(q, k, v, rows, columns, heads)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights, weights_ref, rtol=1e-4, atol=1e-6)
    # Rows and columns are not interchangeable: swapping the embeddings changes the result.
    swapped, _ = local_attention.local_self_attention(q, k, v, columns, rows, heads)
    assert np.abs(np.asarray(swapped) - y_ref).max() > 1e-3
    # The received map: each position's incoming weights averaged over heads, summing to 1.
    received = np.zeros((b, h, w))
    for n, (di, dj) in enumerate(local_attention.neighbour_offsets(kernel)):
        for i in range(h):
            for j in range(w):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    received[:, i + di, j + dj] += weights_ref[:, i, j, :, n].mean(-1)
    got = local_attention.received_attention(jnp.asarray(weights))
    np.testing.assert_allclose(got, received / (h * w), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got).sum((1, 2)), 1.0, rtol=1e-5)


def _config(backbone: str):
    c = default.get_config()
    c.model.num_classes = 10
    c.model.width = 1 / 16 if backbone == "vgg" else 1 / 8
    c.model.backbone = backbone
    c.model.num_taps = 0
    c.model.self_attention_kernel = 5
    c.model.self_attention_heads = 2
    if backbone == "resnet":
        c.model.depth = 11
    return c


def test_self_attention_replaces_the_late_convolutions_and_its_maps_come_out():
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
    # VGG: conv11-13 replaced (stage 5), the rest unchanged; ResNet: stage 3's 3x3 convs.
    vgg = create_model(_config("vgg"))
    shapes = jax.eval_shape(lambda x: vgg.init(jax.random.key(0), x), images)
    params = shapes["params"]
    assert {"conv10", "self_attention11", "self_attention13", "conv14"} <= set(params)
    assert not {"conv11", "conv12", "conv13"} & set(params)
    layer = params["self_attention13"]
    assert layer["query"]["kernel"].shape == (32, 32)
    assert layer["relative_rows"].shape == (5, 2, 8)
    assert layer["relative_columns"].shape == (5, 2, 8)
    resnet = create_model(_config("resnet"))
    params = jax.eval_shape(lambda x: resnet.init(jax.random.key(0), x), images)["params"]
    assert "self_attention" in params["stage3_block1"] and "conv2" not in params["stage3_block1"]
    assert "conv2" in params["stage2_block1"]

    variables = jax.jit(vgg.init)(jax.random.key(0), images)
    maps = inference.attention_maps(vgg, variables, images, upsample=False)
    assert sorted(maps) == ["self_attention11", "self_attention12", "self_attention13"]
    for m in maps.values():
        assert m.shape == (2, 8, 8)
        np.testing.assert_allclose(np.asarray(m).sum((1, 2)), 1.0, rtol=1e-5)
    weights = inference.self_attention_weights(vgg, variables, images)
    assert weights["self_attention13"].shape == (2, 8, 8, 2, 25)
    np.testing.assert_allclose(np.asarray(weights["self_attention13"]).sum(-1), 1.0, rtol=1e-5)


def test_heads_that_do_not_split_the_channels_are_refused():
    from ltpa_jax import validation

    c = _config("vgg")
    c.model.self_attention_heads = 3
    with pytest.raises(validation.ConfigError, match="self_attention_heads=3"):
        validation.check_model_config(c)
    c.model.self_attention_heads = 2
    c.model.self_attention_kernel = 4
    with pytest.raises(validation.ConfigError, match="self_attention_kernel=4"):
        validation.check_model_config(c)


@pytest.mark.slow
def test_se_and_self_attention_train_and_resume_exactly_after_a_kill(tmp_path, monkeypatch, capsys):
    """A VGG with both new blocks (SE after every stage layer, 3x3 self-attention in stage 5):
    4 steps uninterrupted, and 4 steps killed right after the save at step 2 and rerun, end
    with the same parameters and metrics."""
    from conftest import assert_same_runs, override, train_killed_and_resumed

    from configs import smoke
    from ltpa_jax import rundir

    config = override(
        smoke.get_config(),
        dataset="cluttered_digits",
        num_digits_train=64,
        num_train_steps=4,
        eval_every_steps=4,
        checkpoint_every_steps=2,
        keep_checkpoints=10,
        num_picture_images=0,
        **{
            "model.num_taps": 1,
            "model.squeeze_excitation": 2,
            "model.self_attention_kernel": 3,
            "model.self_attention_heads": 2,
        },
    )
    reference, interrupted = train_killed_and_resumed(config, tmp_path, monkeypatch, kill_at=2)
    assert "Resuming from the checkpoint at step 2" in capsys.readouterr().out
    saved = assert_same_runs(reference, interrupted)
    assert saved[0]["step"] == 4
    assert "conv1_se" in saved[0]["params"] and "self_attention13" in saved[0]["params"]
    # The trained run's maps: the LTPA taps and the self-attention layers, one API.
    run = rundir.open_run(reference)
    images = jnp.zeros((2, 32, 32, 3), jnp.float32)
    maps = jax.jit(inference.attention_maps, static_argnums=0, static_argnames="upsample")(
        run.model, run.variables, images, upsample=False
    )
    assert set(maps) == {"att3", "self_attention11", "self_attention12", "self_attention13"}
