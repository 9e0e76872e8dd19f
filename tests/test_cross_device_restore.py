"""A checkpoint written on 8 devices restores on 1, and the other way round.

The everyday workflow: train on a TPU (8 cores), look at the maps on a laptop (1 CPU device).
The test process has 8 forced CPU devices (tests/conftest.py); the other side runs in a
subprocess with 1. Tiny trees, no model: what is tested is Orbax's resharding on restore.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from conftest import ROOT
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltpa_jax import checkpointing


def _values() -> dict:
    """Host values of a small state: a kernel, per-channel statistics, a step counter."""
    return {
        "params": {"conv": {"kernel": np.arange(48, dtype=np.float32).reshape(4, 3, 4)}},
        "batch_stats": {"bn": {"mean": np.linspace(-1, 1, 16, dtype=np.float32)}},
        "step": np.array(7, np.int32),
    }


def _run_on_one_device(code: str) -> dict:
    """Runs `code` in a fresh Python with 1 CPU device; returns the JSON it prints last."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    prelude = textwrap.dedent(
        """
        import json, sys
        import jax, numpy as np
        from ltpa_jax import checkpointing
        assert jax.device_count() == 1, jax.devices()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_checkpoint_saved_on_8_devices_restores_in_a_1_device_process(tmp_path):
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    values = _values()
    state = {
        "params": jax.device_put(values["params"], NamedSharding(mesh, P())),  # Replicated.
        "batch_stats": jax.device_put(values["batch_stats"], NamedSharding(mesh, P("data"))),
        "step": jax.device_put(values["step"], NamedSharding(mesh, P())),
    }
    manager = checkpointing.create_manager(tmp_path, keep=2, every_steps=1)
    assert checkpointing.save(manager, 7, state)
    manager.wait_until_finished()
    manager.close()

    restored = _run_on_one_device(
        f"""
        directory = {str(tmp_path)!r}
        target = {{
            "params": {{"conv": {{"kernel": jax.numpy.zeros((4, 3, 4))}}}},
            "batch_stats": {{"bn": {{"mean": jax.numpy.zeros(16)}}}},
            "step": jax.numpy.array(0, jax.numpy.int32),
        }}
        state, step, notes = checkpointing.restore_latest(directory, target)
        devices = {{str(d) for x in jax.tree.leaves(state) for d in x.devices()}}
        loaded = checkpointing.load_variables(directory)
        print(json.dumps({{
            "step": step, "notes": notes, "devices": sorted(devices),
            "kernel": np.asarray(state["params"]["conv"]["kernel"]).tolist(),
            "mean": np.asarray(state["batch_stats"]["bn"]["mean"]).tolist(),
            "loaded_step": loaded["step"],
            "loaded_kernel": loaded["params"]["conv"]["kernel"].tolist(),
            "loaded_mean": loaded["batch_stats"]["bn"]["mean"].tolist(),
        }}))
        """
    )
    assert (restored["step"], restored["notes"], restored["loaded_step"]) == (7, [], 7)
    assert len(restored["devices"]) == 1
    for key in ("kernel", "loaded_kernel"):
        np.testing.assert_array_equal(restored[key], values["params"]["conv"]["kernel"])
    for key in ("mean", "loaded_mean"):
        np.testing.assert_array_equal(restored[key], values["batch_stats"]["bn"]["mean"])


def test_checkpoint_saved_on_1_device_restores_sharded_over_8(tmp_path):
    _run_on_one_device(
        f"""
        values = {{
            "params": {{"conv": {{"kernel": np.arange(48, dtype=np.float32).reshape(4, 3, 4)}}}},
            "batch_stats": {{"bn": {{"mean": np.linspace(-1, 1, 16, dtype=np.float32)}}}},
            "step": np.array(7, np.int32),
        }}
        manager = checkpointing.create_manager({str(tmp_path)!r}, keep=2, every_steps=1)
        checkpointing.save(manager, 7, jax.tree.map(jax.numpy.asarray, values))
        manager.close()
        print(json.dumps({{"steps": checkpointing.list_steps({str(tmp_path)!r})}}))
        """
    )
    mesh = jax.make_mesh((8,), ("data",))
    target = {
        "params": jax.device_put(
            {"conv": {"kernel": jnp.zeros((4, 3, 4))}}, NamedSharding(mesh, P())
        ),
        "batch_stats": jax.device_put(
            {"bn": {"mean": jnp.zeros(16)}}, NamedSharding(mesh, P("data"))
        ),
        "step": jax.device_put(jnp.array(0, jnp.int32), NamedSharding(mesh, P())),
    }
    state, step, notes = checkpointing.restore_latest(tmp_path, target)
    assert (step, notes) == (7, [])
    mean = state["batch_stats"]["bn"]["mean"]
    assert mean.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), mean.ndim)
    values = _values()
    np.testing.assert_array_equal(np.asarray(mean), values["batch_stats"]["bn"]["mean"])
    np.testing.assert_array_equal(
        np.asarray(state["params"]["conv"]["kernel"]), values["params"]["conv"]["kernel"]
    )
