"""Tests for ltpa_jax.robustness: FGSM and PGD attacks, accuracy against epsilon, plot and CSV.

One width-1/16 VGG-att3 (the smoke config) with random weights is initialised for the module;
the attacks run on one batch of 8 random 32x32 images, so each attack compiles once.
"""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import smoke
from ltpa_jax import create_model
from ltpa_jax.robustness import (
    accuracy_under_attack,
    fgsm,
    pgd,
    plot_accuracy_vs_epsilon,
    write_csv,
)

S = 32
B = 8
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10.
STD = (0.2470, 0.2435, 0.2616)
EPS = 8 / 255
STEPS = 3
NORM = {"mean": MEAN, "std": STD}


def _to_pixels(images: jax.Array) -> np.ndarray:
    return np.asarray(images) * np.asarray(STD) + np.asarray(MEAN)


@pytest.fixture(scope="module")
def model():
    config = smoke.get_config()
    config.model.width = 1 / 16
    return create_model(config)


@pytest.fixture(scope="module")
def pixels():
    return jax.random.uniform(jax.random.key(1), (B, S, S, 3))


@pytest.fixture(scope="module")
def images(pixels):
    """Normalised as in training."""
    return (pixels - jnp.asarray(MEAN)) / jnp.asarray(STD)


@pytest.fixture(scope="module")
def labels(model):
    return jax.random.randint(jax.random.key(2), (B,), 0, model.num_classes)


@pytest.fixture(scope="module")
def variables(model, images):
    """The full `model.init` output: the attacks must ignore its sown collections."""
    return jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)


@pytest.fixture(scope="module")
def loss(model, variables):
    eval_vars = {k: variables[k] for k in ("params", "batch_stats")}

    @jax.jit
    def mean_loss(images, labels):
        logits = model.apply(eval_vars, images, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return lambda images, labels: float(mean_loss(images, labels))


@pytest.fixture(scope="module")
def fgsm_images(model, variables, images, labels):
    return fgsm(model, variables, images, labels, EPS, **NORM)


@pytest.fixture(scope="module")
def pgd_images(model, variables, images, labels):
    return pgd(model, variables, images, labels, EPS, **NORM, steps=STEPS)


# --- Attacks. -----------------------------------------------------------------------------------


def test_fgsm_increases_the_loss(loss, fgsm_images, images, labels):
    assert loss(fgsm_images, labels) > loss(images, labels)


def test_pgd_loss_is_at_least_the_fgsm_loss(loss, pgd_images, fgsm_images, images, labels):
    assert loss(pgd_images, labels) > loss(images, labels)
    assert loss(pgd_images, labels) >= loss(fgsm_images, labels) - 1e-3


@pytest.mark.parametrize("which", ["fgsm", "pgd", "pgd_random_start"])
def test_attacks_stay_in_the_epsilon_ball_and_pixel_range(
    which, model, variables, images, labels, fgsm_images, pgd_images
):
    if which == "fgsm":
        adversarial = fgsm_images
    elif which == "pgd":
        adversarial = pgd_images
    else:
        adversarial = pgd(
            model, variables, images, labels, EPS, **NORM, steps=STEPS, key=jax.random.key(3)
        )
    assert adversarial.shape == images.shape
    clean, attacked = _to_pixels(images), _to_pixels(adversarial)
    assert np.abs(attacked - clean).max() <= EPS + 1e-5
    assert attacked.min() >= -1e-5 and attacked.max() <= 1 + 1e-5
    assert np.abs(attacked - clean).max() > EPS / 2  # The attack did move pixels.


def test_epsilon_zero_returns_the_images(model, variables, images, labels):
    np.testing.assert_array_equal(fgsm(model, variables, images, labels, 0.0, **NORM), images)
    np.testing.assert_array_equal(
        pgd(model, variables, images, labels, 0.0, **NORM, steps=STEPS), images
    )


def test_fgsm_compiles_once_for_every_epsilon(model, variables, images, labels, fgsm_images):
    before = fgsm._cache_size()
    small = fgsm(model, variables, images, labels, 1 / 255, **NORM)
    large = fgsm(model, variables, images, labels, 4 / 255, **NORM)
    assert fgsm._cache_size() == before
    clean = _to_pixels(images)
    np.testing.assert_allclose(np.abs(_to_pixels(small) - clean).max(), 1 / 255, atol=1e-5)
    np.testing.assert_allclose(np.abs(_to_pixels(large) - clean).max(), 4 / 255, atol=1e-5)


# --- Accuracy against epsilon. ------------------------------------------------------------------


def _clean_predictions(model, variables, images) -> np.ndarray:
    eval_vars = {k: variables[k] for k in ("params", "batch_stats")}
    return np.asarray(jnp.argmax(model.apply(eval_vars, images, train=False), -1))


def _accuracy(model, variables, images, labels) -> float:
    return float(np.mean(_clean_predictions(model, variables, images) == np.asarray(labels)))


def test_accuracy_at_epsilon_zero_is_the_clean_accuracy(model, variables, images, labels):
    lines = []
    flipped = images[::-1], labels[::-1]
    batches = ({"image": x, "label": y} for x, y in ((images, labels), flipped))
    curve = accuracy_under_attack(
        model, variables, batches, [EPS, 0, 2 / 255], **NORM, progress=lines.append
    )
    assert list(curve) == [EPS, 0.0, 2 / 255]  # A generator is read once, used per epsilon.
    assert all(0.0 <= a <= 1.0 for a in curve.values())
    assert curve[0.0] == pytest.approx(_accuracy(model, variables, images, labels))
    adversarial = fgsm(model, variables, images, labels, EPS, **NORM)
    assert curve[EPS] == pytest.approx(_accuracy(model, variables, adversarial, labels))
    assert lines[0] == f"fgsm eps=0.0314: accuracy {curve[EPS]:.4f} (16 images)"
    assert len(lines) == 3


def test_accuracy_excludes_masked_rows(model, variables, images):
    predicted = _clean_predictions(model, variables, images)
    mask = np.arange(B) < 5
    # Real rows labelled with the model's own prediction, padded rows with a wrong class.
    labels = np.where(mask, predicted, (predicted + 1) % model.num_classes)
    batch = {"image": images, "label": labels, "mask": mask}
    curve = accuracy_under_attack(model, variables, [batch], [0.0, EPS], **NORM)
    assert curve[0.0] == 1.0
    unmasked = accuracy_under_attack(model, variables, [{**batch, "mask": ~mask}], [0.0], **NORM)
    assert unmasked[0.0] == 0.0


def test_accuracy_under_pgd_is_the_accuracy_on_pgd_images(model, variables, images):
    # Labelled with the model's own predictions: clean accuracy 1. (A random-weight model
    # predicts one class with a wide margin, so the attack need not flip any prediction.)
    labels = jnp.asarray(_clean_predictions(model, variables, images))
    batch = {"image": images, "label": labels}
    curve = accuracy_under_attack(
        model, variables, [batch], [0.0, EPS], attack="pgd", **NORM, steps=STEPS
    )
    assert curve[0.0] == 1.0
    adversarial = pgd(model, variables, images, labels, EPS, **NORM, steps=STEPS)
    assert curve[EPS] == pytest.approx(_accuracy(model, variables, adversarial, labels))
    assert curve[EPS] <= curve[0.0]


def test_accuracy_rejects_an_unknown_attack_or_negative_epsilon(model, variables, images, labels):
    batch = {"image": images, "label": labels}
    with pytest.raises(ValueError, match="'fgsm', 'pgd'"):
        accuracy_under_attack(model, variables, [batch], [0.0], attack="cw", **NORM)
    with pytest.raises(ValueError, match="epsilon=-0.1"):
        accuracy_under_attack(model, variables, [batch], [0.0, -0.1], **NORM)


# --- Plot and CSV. ------------------------------------------------------------------------------

CURVES = {
    "VGG-att3 (demo)": {0.0: 0.9, 2 / 255: 0.5, 8 / 255: 0.1},
    "VGG baseline": {0.0: 0.85, 8 / 255: 0.05},
}


def test_plot_writes_a_png(tmp_path):
    path = str(tmp_path / "plots" / "robustness.png")
    assert plot_accuracy_vs_epsilon(CURVES, path, title="CIFAR-10, FGSM") == path
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_csv_has_one_column_per_run_and_empty_cells(tmp_path):
    path = str(tmp_path / "tables" / "robustness.csv")
    assert write_csv(CURVES, path) == path
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epsilon", "epsilon_255", "VGG-att3 (demo)", "VGG baseline"]
    assert [row[1] for row in rows[1:]] == ["0", "2", "8"]
    assert [float(row[0]) for row in rows[1:]] == [0.0, 2 / 255, 8 / 255]
    assert rows[2][2:] == ["0.5", ""]
    assert [float(x) for x in rows[3][2:]] == [0.1, 0.05]
