"""Configs as code: the base config (`default`) and loading of config files from anywhere.

`configs/*.py` (top level, one experiment each) import the base as
`from ltpa_jax.configs import default` and a sibling experiment with `sibling(__file__, name)`,
so they load from any working directory without editing `sys.path`.
"""

import importlib.util
import os
import types


def load_module(path: str) -> types.ModuleType:
    """Imports a config file by path (its `get_config()` returns the ConfigDict).

    Raises:
      FileNotFoundError: no such file.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path} does not exist.")
    name = "ltpa_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling(config_file: str, name: str) -> types.ModuleType:
    """The config module `name` in the same folder as `config_file` (pass `__file__`)."""
    return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py"))
