"""Shared test setup.

* Every test runs with 8 forced CPU devices, so that each sharding path is exercised; the
  flag must be set before JAX initialises its backend, hence here.
* `configs` resolves through pytest's `pythonpath` setting (pyproject.toml).
"""

import itertools
import os
from pathlib import Path
from typing import NamedTuple

import pytest

# Every test runs with 8 forced CPU devices, and XLA's backend optimisations off: the test
# models are tiny, so compiling dominates, and unoptimised compiles take half the time.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=8",
        "--xla_backend_optimization_level=0",
    ]
).strip()

ROOT = str(Path(__file__).resolve().parents[1])

# The command-line tools re-execute themselves with glibc's malloc on huge pages (ltpa_jax/cli.py);
# the subprocesses that tests start get that environment from the start instead.
from ltpa_jax import cli  # noqa: E402

_environ = cli.hugepages_environment_here(dict(os.environ))
if _environ is not None:
    os.environ["GLIBC_TUNABLES"] = _environ["GLIBC_TUNABLES"]


def override(config, **fields):
    """`config` with dotted fields set, e.g. `override(c, **{"model.width": 0.25})`."""
    for key, value in fields.items():
        target = config
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return config


def run_tool(module: str, *args: str, cwd: str = ROOT, timeout: float = 300, env=None):
    """Runs `python -m ltpa_jax.<module> args...` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", f"ltpa_jax.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def tiny_model(**model_fields):
    """The default VGG at 1/16 width with 10 classes (fast to compile), `model_fields` set."""
    from ltpa_jax.configs import default
    from ltpa_jax.models import create_model

    config = default.get_config()
    config.model.width = 1 / 16
    config.model.num_classes = 10
    for field, value in model_fields.items():
        config.model[field] = value
    return create_model(config)


class Killed(Exception):
    """Raised by `train_killed_and_resumed` where a real run would be killed."""


def train_killed_and_resumed(config, tmp_path, monkeypatch, kill_at: int) -> tuple[str, str]:
    """Trains `config` uninterrupted, then again killed right after its save at step `kill_at`
    and rerun in the same workdir; returns both workdirs (reference, interrupted)."""
    import pytest

    from ltpa_jax import checkpointing, train

    reference, interrupted = str(tmp_path / "reference"), str(tmp_path / "interrupted")
    train.train_and_evaluate(config, reference)
    save = checkpointing.save

    def save_then_die(manager, step, *args, **kwargs):
        save(manager, step, *args, **kwargs)
        if step == kill_at:
            manager.wait_until_finished()
            raise Killed

    monkeypatch.setattr(checkpointing, "save", save_then_die)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, interrupted)
    monkeypatch.setattr(checkpointing, "save", save)
    train.train_and_evaluate(config, interrupted)
    return reference, interrupted


def assert_same_runs(reference: str, interrupted: str) -> list[dict]:
    """Both runs ended with the same final metrics and saved the same variables at the same
    step; returns both runs' saved variables."""
    import json

    import jax
    import numpy as np
    import pytest

    from ltpa_jax import checkpointing, rundir

    final = [json.load(open(f"{w}/final_metrics.json")) for w in (reference, interrupted)]
    assert final[1] == pytest.approx(final[0], rel=1e-5, abs=1e-6)
    saved = [
        checkpointing.load_variables(rundir.checkpoints_of(w)) for w in (reference, interrupted)
    ]
    assert saved[0]["step"] == saved[1]["step"]
    for a, b in zip(jax.tree.leaves(saved[0]), jax.tree.leaves(saved[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return saved


class Bucket(NamedTuple):
    """A bucket of the in-memory Cloud Storage (tests/fake_gcs.py)."""

    name: str
    server: "fake_gcs.BucketServer"  # noqa: F821 (imported by the fixture)

    @property
    def path(self):
        """gs://<name>, as an epath."""
        from etils import epath

        return epath.Path(f"gs://{self.name}")

    def names(self, prefix: str = "") -> list[str]:
        """Its object names under `prefix`, sorted."""
        return [name for name in self.server.names(self.name) if name.startswith(prefix)]


@pytest.fixture(scope="session")
def _cloud_storage(tmp_path_factory):
    import fake_gcs

    server = fake_gcs.BucketServer()
    proxy = fake_gcs.StorageProxy(server, tmp_path_factory.mktemp("fake_gcs"))
    yield server, proxy
    proxy.shutdown()
    server.shutdown()


_bucket_numbers = itertools.count()


@pytest.fixture
def gcs(monkeypatch, _cloud_storage) -> Bucket:
    """A new, empty gs:// bucket in memory that every client of a run reaches, as on Colab:
    TensorFlow's GCS client (epath, the TensorBoard writer), TensorStore's and
    google-cloud-storage (Orbax). See tests/fake_gcs.py. A new name for each test: the
    clients cache what they saw."""
    import fake_gcs

    server, proxy = _cloud_storage
    environment = fake_gcs.environment(server, proxy)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Bucket(f"bucket-{next(_bucket_numbers)}", server)
