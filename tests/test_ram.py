"""RAM: the glimpse sensor against NumPy, REINFORCE's gradient sign, training and resume."""

import glob
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_runs, override, train_killed_and_resumed

from configs import digits_ram
from ltpa_jax import attend, inference, localization, rundir, train, validation, visualize
from ltpa_jax.models import ram


def numpy_glimpse(image, location, glimpse_size, num_scales):
    """Reference retina of one image [H, W, C] at location (y, x) in [-1, 1]."""
    h, w, c = image.shape
    centre = ((location[0] + 1) / 2 * h, (location[1] + 1) / 2 * w)
    patches = []
    for k in range(num_scales):
        side = glimpse_size * 2**k
        top = int(np.floor(centre[0] - side / 2 + 0.5))
        left = int(np.floor(centre[1] - side / 2 + 0.5))
        patch = np.zeros((side, side, c), np.float32)
        for i in range(side):
            for j in range(side):
                y, x = top + i, left + j
                if 0 <= y < h and 0 <= x < w:
                    patch[i, j] = image[y, x]
        f = 2**k
        patches.append(patch.reshape(glimpse_size, f, glimpse_size, f, c).mean(axis=(1, 3)))
    return np.stack(patches)


def test_glimpse_matches_a_numpy_retina_including_the_edges():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 20, 20, 3)).astype(np.float32)
    locations = np.array(
        [[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0], [0.33, -0.71], [-0.95, 0.4]], np.float32
    )
    got = jax.jit(ram.glimpse, static_argnums=(2, 3))(
        jnp.asarray(images), jnp.asarray(locations), 4, 3
    )
    assert got.shape == (5, 3, 4, 4, 3)
    for b in range(5):
        np.testing.assert_allclose(
            np.asarray(got[b]), numpy_glimpse(images[b], locations[b], 4, 3), atol=1e-5
        )
    assert ram.patch_sizes(4, 3) == (4, 8, 16)


def test_location_maps_peak_at_each_glimpse():
    locations = jnp.asarray([[[0.0, 0.0], [-0.5, 0.5]]])  # [B=1, T=2, 2]
    maps = np.asarray(ram.location_maps(locations, 16, 2.0))
    assert maps.shape == (1, 2, 16, 16) and maps.min() > 0 and maps.max() <= 1
    # Centre (8, 8) in pixels lies between pixels 7 and 8; (-0.5, 0.5) -> (4, 12).
    assert np.unravel_index(maps[0, 0].argmax(), (16, 16)) in {(7, 7), (7, 8), (8, 7), (8, 8)}
    assert np.unravel_index(maps[0, 1].argmax(), (16, 16)) in {(3, 11), (3, 12), (4, 11), (4, 12)}


def test_reinforce_gradient_favours_the_rewarded_arm():
    """Two arms, arm 0 pays 1 and arm 1 pays 0: a descent step on the REINFORCE loss raises
    the probability of arm 0, with or without a baseline; the same for a Gaussian policy whose
    right half pays."""
    key = jax.random.key(0)
    arms = jax.random.bernoulli(key, 0.5, (4096,)).astype(jnp.int32)
    rewards = (arms == 0).astype(jnp.float32)

    def categorical_loss(theta, baseline):
        log_probs = jax.nn.log_softmax(theta)[arms][:, None]
        baselines = jnp.full_like(log_probs, baseline)
        return ram.reinforce_loss(log_probs, baselines, rewards).mean()

    for baseline in (0.0, 0.5):
        grad = np.asarray(jax.grad(categorical_loss)(jnp.zeros(2), baseline))
        assert grad[0] < 0 < grad[1], grad

    std = 0.5
    samples = jax.random.normal(jax.random.key(1), (4096, 1)) * std
    paid = (samples[:, 0] > 0).astype(jnp.float32)

    def gaussian_loss(mean, baseline):
        log_probs = ram.gaussian_log_prob(samples, mean, std)[:, None]
        return ram.reinforce_loss(log_probs, jnp.full_like(log_probs, baseline), paid).mean()

    for baseline in (0.0, 0.5):
        assert float(jax.grad(gaussian_loss)(jnp.zeros(1), baseline)[0]) < 0
    # The baseline regresses on the reward; the policy's advantage is not differentiated.
    grad_b = jax.grad(lambda b: ram.baseline_loss(jnp.full((4, 1), b), jnp.ones(4)).sum())(0.2)
    assert float(grad_b) < 0
    assert not jax.grad(lambda b: ram.reinforce_loss(jnp.ones((2, 1)), b, jnp.ones(2)).sum())(
        jnp.zeros((2, 1))
    ).any()


def test_gaussian_log_prob_matches_the_density():
    x, mean, std = jnp.asarray([[0.3, -0.2]]), jnp.asarray([[0.1, 0.0]]), 0.25
    density = np.prod(np.exp(-((x - mean) ** 2) / (2 * std**2)) / (std * np.sqrt(2 * np.pi)))
    np.testing.assert_allclose(ram.gaussian_log_prob(x, mean, std), [np.log(density)], rtol=1e-5)


def tiny_config():
    """digits_ram with 3 glimpses of a 4-8-16 px retina, 16 units, 4 steps, saved every 2."""
    config = digits_ram.get_config()
    config.model.ram_num_glimpses = 3
    config.model.ram_glimpse_size = 4
    config.model.ram_hidden_size = 16
    return override(
        config,
        num_digits_train=64,
        num_digits_test=32,
        shuffle_buffer=64,
        batch_size=16,
        eval_batch_size=16,
        num_train_steps=4,
        warmup_epochs=0.0,
        log_every_steps=2,
        eval_every_steps=4,
        checkpoint_every_steps=2,
        keep_checkpoints=10,
        num_picture_images=2,
    )


@pytest.mark.slow
def test_ram_trains_resumes_exactly_after_a_kill_and_its_glimpses_go_through_the_api(
    tmp_path, monkeypatch, capsys
):
    config = tiny_config()
    reference, interrupted = train_killed_and_resumed(config, tmp_path, monkeypatch, kill_at=2)
    assert "Resuming from the checkpoint at step 2" in capsys.readouterr().out
    assert_same_runs(reference, interrupted)  # The sampled locations are redrawn the same.
    assert glob.glob(f"{reference}/pictures/attention_step*.png")

    run = rundir.open_run(reference)
    images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)
    maps = inference.attention_maps(run.model, run.variables, images)
    assert set(maps) == {"glimpse1", "glimpse2", "glimpse3"}
    assert all(m.shape == (2, 32, 32) and float(m.min()) >= 0 for m in maps.values())
    boxes = jnp.asarray([[0, 0, 16, 16], [8, 8, 24, 24]], jnp.float32)
    scores = localization.finalize(localization.localization_sums(maps, boxes, jnp.ones(2, bool)))
    assert set(scores) == {*maps, localization.COMBINED}

    # Evaluation takes the policy's mean: the same path every time, the first at the centre.
    paths = run.model.glimpse_locations(run.variables, images)
    assert paths.shape == (2, 3, 2)
    np.testing.assert_array_equal(paths, run.model.glimpse_locations(run.variables, images))
    np.testing.assert_array_equal(paths[:, 0], 16.0)
    # Each glimpse's map peaks at its location.
    peak = np.unravel_index(np.asarray(maps["glimpse3"][0]).argmax(), (32, 32))
    assert np.abs(np.asarray(peak) + 0.5 - paths[0, 2]).max() <= 1.0
    figure = visualize.attention_grid(
        np.zeros((2, 32, 32, 3)), maps, None, np.zeros(2, int), paths=paths, path_patch=4
    )
    assert len(figure.axes[0].lines) == 1  # The path, on the image column.
    # ltpa-attend keeps each image's path beside its maps and draws it on the grids.
    written, _ = attend.attend(reference, num_images=4, batch_size=4, out=str(tmp_path / "maps"))
    saved = np.load(tmp_path / "maps" / "attention.npz")
    assert saved["glimpse_paths"].shape == (4, 3, 2)
    np.testing.assert_array_equal(saved["glimpse_paths"][:, 0], 16.0)  # The centre first.
    assert any(p.endswith(".png") for p in written)

    # Training samples the locations ("sample" rng): the loss depends on the key.
    labels = jnp.asarray([1, 2])
    params = {"params": run.variables["params"]}

    def loss(seed):
        rngs = {"sample": jax.random.key(seed)}
        return run.model.apply(params, images, labels, method="loss", rngs=rngs)[0]

    assert loss(0).shape == (2,)
    out = run.model.apply(
        params, images, True, method="episode", rngs={"sample": jax.random.key(0)}
    )
    rewards = (out["logits"].argmax(-1) == labels).astype(jnp.float32)
    policy = ram.reinforce_loss(out["log_probs"], out["baselines"], rewards)
    policy += ram.baseline_loss(out["baselines"], rewards)
    expected = train.cross_entropy(out["logits"], labels) + policy / 2  # T - 1 = 2 decisions.
    np.testing.assert_allclose(loss(0), expected, rtol=1e-5)
    assert not np.allclose(loss(0), loss(1))
    np.testing.assert_allclose(loss(0), loss(0))
    assert train.uses_own_loss(run.model.apply) and not train.uses_own_loss(lambda: None)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model.ram_num_glimpses": 0}, "ram_num_glimpses=0 must be at least 1"),
        ({"model.ram_location_std": 0.0}, "ram_location_std=0.0 must be a finite number > 0"),
        ({"model.ram_num_scales": 9}, "ram_num_scales=9 must be 1 to 8"),
        ({"model.self_attention_kernel": 7}, "not possible for config.model.backbone='ram'"),
    ],
)
def test_impossible_ram_fields_are_refused_with_their_name(fields, message):
    with pytest.raises(validation.ConfigError, match=re.escape(message)):
        validation.check_config(override(digits_ram.get_config(), **fields))
