"""Every experiment config loads, keeps the default's fields and is valid; the configs that
replicate a published run reproduce its source's learning rate at every epoch.

The sources' rates are computed from their own rules (spec section 6, the source files named
in each config's docstring), epoch by epoch (an epoch of the reference is 3 passes, of the
official code 1), and compared with our schedule at the first and the last step of each of our
epochs. Our decays fall exactly at epoch boundaries, one epoch after the sources' (which step
their rate at the start of the epoch that ends the period): that deliberate difference is
asserted epoch by epoch, not hidden by a tolerance.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from ltpa_jax import train, validation
from ltpa_jax.configs import default, load_module

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "caltech_birds2011": 5_994}


def _keys(config, prefix=""):
    out = set()
    for key, value in config.items():
        out.add(prefix + key)
        if hasattr(value, "items"):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def _load(name):
    return load_module(str(CONFIG_DIR / f"{name}.py")).get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
    config = _load(name)
    assert _keys(config) == _keys(default.get_config())  # No new or missing field.
    validation.check_config(config)  # Every rule, with batch sizes against 8 devices.


def test_cub_16gb_config_is_the_memory_section_one():
    config = _load("cub_vgg_att3_concat_pc_16gb")
    assert (config.image_size, config.batch_size, config.remat) == (224, 16, "full")
    assert config.half_precision


# -- the sources' rates, from their own rules ----------------------------------------------------


def reference_rate(epoch: int) -> float:
    """SaoYan's train.py in epoch `epoch` (0-based): LambdaLR(0.5 ** int(epoch / 25)), stepped
    at the start of each epoch, so the lambda sees epoch + 1."""
    return 0.1 * 0.5 ** ((epoch + 1) // 25)


def official_vgg_rate(epoch: int) -> float:
    """The official main_*.lua in epoch `epoch` (0-based): learningRate = 1, halved at the start
    of each 1-based epoch divisible by 25; optim.sgd's dampening (= momentum 0.9) makes that
    0.1 in the undamped convention of torch.optim.SGD and optax."""
    halvings = sum(1 for e in range(1, epoch + 2) if e % 25 == 0)
    return 1.0 * (1 - 0.9) * 0.5**halvings


def official_resnet_rate(epoch: int) -> float:
    """train_attenunit_2levels.lua with scripts/main.sh: 0.1 (Nesterov, dampening 0), x0.2 at
    the start of 1-based epochs 60, 120, 160."""
    return 0.1 * 0.2 ** sum(1 for m in (60, 120, 160) if m <= epoch + 1)


def official_cub_rate(epoch: int) -> float:
    """run_expt_cubs200.sh: learningRate 0.1 (0.01 undamped), epoch_step {30, ..., 300} with
    lr_step {2, 2, 0.5, ...}, applied at the start of those 1-based epochs."""
    rate = 0.1 * (1 - 0.9)
    for m, factor in zip(range(30, 301, 30), (2, 2) + (0.5,) * 8, strict=True):
        if m <= epoch + 1:
            rate *= factor
    return rate


def _source(config):
    """(rate of a 0-based epoch, passes per epoch) of the run `config` replicates."""
    if config.dataset == "caltech_birds2011" and config.model.preset == "official":
        return official_cub_rate, 1
    if config.model.backbone == "resnet":
        return official_resnet_rate, 1
    if config.model.preset == "reference":
        return reference_rate, 3
    return official_vgg_rate, 1


def _ours_per_epoch(config):
    """Our rate at the first and at the last step of each epoch, and the steps per epoch."""
    steps_per_pass = TRAIN_IMAGES[config.dataset] // config.batch_size
    schedule = train.learning_rate_schedule(config, steps_per_pass)
    per_epoch = steps_per_pass * config.passes_per_epoch
    epochs = np.arange(config.num_epochs)
    first = np.asarray(schedule(jnp.asarray(epochs * per_epoch)))
    last = np.asarray(schedule(jnp.asarray((epochs + 1) * per_epoch - 1)))
    return first, last, per_epoch


# The CIFAR experiments and the official CUB runs (default.py is the base config, one pass
# per epoch; smoke.py and the demos are not experiments).
REPLICATING = [
    name
    for name in CONFIGS
    if name.startswith(("cifar10_", "cifar100_"))
    or (name.startswith("cub_") and name.endswith("_official"))
]


@pytest.mark.parametrize("name", REPLICATING)
def test_schedule_reproduces_the_sources_rate_at_every_decay(name):
    config = _load(name)
    source, passes = _source(config)
    assert config.passes_per_epoch == passes  # The reference's epoch is 3 passes.
    first, last, per_epoch = _ours_per_epoch(config)
    np.testing.assert_array_equal(first, last)  # Constant within an epoch: decays at boundaries.
    theirs = np.array([source(e) for e in range(config.num_epochs)])
    # The source changes its rate at the start of epoch e + 1 (1-based): 0-based epoch e.
    source_changes = [e for e in range(1, config.num_epochs) if theirs[e] != theirs[e - 1]]
    assert source_changes, name
    # Ours changes one epoch later, at the boundary: during each source change's first epoch
    # we still run at the rate before it (and a change in the source's last epoch, such as the
    # reference's 12th halving, never comes); everywhere else the rates are equal.
    differ = {e for e in range(config.num_epochs) if not np.isclose(first[e], theirs[e])}
    assert differ == set(source_changes), (name, sorted(differ ^ set(source_changes)))
    for e in differ:
        np.testing.assert_allclose(first[e], theirs[e - 1], rtol=1e-6)  # The previous rate.
    for e in set(range(config.num_epochs)) - differ:
        np.testing.assert_allclose(first[e], theirs[e], rtol=1e-6)
    # And in steps: each of our changes is at an epoch boundary, the epoch after the source's.
    schedule = train.learning_rate_schedule(config, per_epoch // config.passes_per_epoch)
    steps = jnp.arange(1, config.num_epochs * per_epoch)
    changed = np.flatnonzero(np.asarray(schedule(steps)) != np.asarray(schedule(steps - 1)))
    ours_change = [(int(steps[i]) // per_epoch, int(steps[i]) % per_epoch) for i in changed]
    assert ours_change == [(e + 1, 0) for e in source_changes if e + 1 < config.num_epochs]


def test_reference_configs_train_three_times_the_steps_of_single_passes():
    config = _load("cifar100_vgg_att3_concat_pc")
    assert train.total_train_steps(config, 50_000 // 128) == 300 * 3 * 390  # 351,000 steps.
    official = _load("cifar100_vgg_att3_concat_pc_official")
    assert train.total_train_steps(official, 50_000 // 128) == 300 * 390


def test_official_cub_recipe_raises_then_lowers_the_rate():
    config = _load("cub_vgg_att3_concat_pc_official")
    first, _, _ = _ours_per_epoch(config)
    np.testing.assert_allclose(first[[0, 30, 60, 90, 299, 300, 319]], [
        0.01, 0.02, 0.04, 0.02, 0.04 * 0.5**7, 0.04 * 0.5**8, 0.04 * 0.5**8
    ], rtol=1e-6)  # fmt: skip
    assert (config.image_size, config.batch_size, config.num_epochs) == (32, 128, 320)


@pytest.mark.parametrize(
    ("epochs", "factors"),
    [((30, 60), (2.0,)), ((30,), (0.0,)), ((30,), (float("inf"),)), ((), (0.5,))],
)
def test_lr_decay_factors_must_match_the_decay_epochs(epochs, factors):
    config = _load("cifar100_vgg_att3_concat_pc")
    config.lr_decay_at_epochs = epochs
    config.lr_decay_factors = factors
    with pytest.raises(validation.ConfigError, match="lr_decay_factors"):
        validation.check_config(config)
