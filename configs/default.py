"""The base config (VGG-att3-concat-pc, reference preset, CIFAR-100), kept in the package.

    ltpa-train --config=configs/default.py --workdir=/tmp/ltpa/default

Its fields and comments live in `ltpa_jax/configs/default.py`, so that every config file and
the library import it from anywhere: `from ltpa_jax.configs import default`.
"""

from ltpa_jax.configs.default import get_config, get_model_config

__all__ = ["get_config", "get_model_config"]
