"""Every experiment config loads from its file, keeps the default's fields, and is valid."""

from pathlib import Path

import pytest

from ltpa_jax import validation
from ltpa_jax.configs import default, load_module

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def _keys(config, prefix=""):
    out = set()
    for key, value in config.items():
        out.add(prefix + key)
        if hasattr(value, "items"):
            out |= _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
    config = load_module(str(CONFIG_DIR / f"{name}.py")).get_config()
    assert _keys(config) == _keys(default.get_config())  # No new or missing field.
    validation.check_config(config)  # Every rule, with batch sizes against 8 devices.


def test_cub_16gb_config_is_the_memory_section_one():
    config = load_module(str(CONFIG_DIR / "cub_vgg_att3_concat_pc_16gb.py")).get_config()
    assert (config.image_size, config.batch_size, config.remat) == (224, 16, "full")
    assert config.half_precision
