"""Every experiment config loads, keeps the default's fields, and passes validation."""

import importlib
from pathlib import Path

import pytest

from configs import default
from ltpa_jax import validation

CONFIGS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
    if p.stem != "__init__"
)


def _keys(config, prefix=""):
    out = set()
    for key, value in config.items():
        out.add(prefix + key)
        if hasattr(value, "items"):
            out |= _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert _keys(config) == _keys(default.get_config())  # No new or missing field.
    validation.check_config(config)  # Builds the model; checks sizes against 8 devices.


def test_cub_16gb_config_is_the_memory_section_one():
    config = importlib.import_module("configs.cub_vgg_att3_concat_pc_16gb").get_config()
    assert (config.image_size, config.batch_size, config.remat) == (224, 16, "full")
    assert config.half_precision
