"""Training system: sharded steps, schedule, end-to-end runs, resume, preemption, bad configs.

Runs with 8 forced CPU devices (conftest.py sets XLA_FLAGS before JAX starts).
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import ROOT, override, run_tool

from configs import smoke
from ltpa_jax import checkpointing, rundir, train, validation
from ltpa_jax.data import shard_batch
from ltpa_jax.models import create_model


def smoke_config(**overrides):
    return override(smoke.get_config(), **overrides)


def read_scalars(workdir: str) -> dict[str, dict[int, float]]:
    """All scalars of the TensorBoard event files in workdir: tag -> {step: value}."""
    scalars: dict[str, dict[int, float]] = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor"):
                    array = tf.make_ndarray(value.tensor)
                    if array.ndim:  # Images (attention pictures), not scalars.
                        continue
                    number = float(array)
                else:
                    number = value.simple_value
                scalars.setdefault(value.tag, {})[event.step] = number
    return scalars


def test_eight_devices_are_forced():
    assert jax.device_count() == 8


def test_learning_rate_halves_exactly_at_epoch_boundaries():
    config = smoke_config(learning_rate=0.1, lr_decay_every_epochs=2, num_epochs=7)
    schedule = train.learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(19)) == pytest.approx(0.1)
    assert float(schedule(20)) == pytest.approx(0.05)
    assert float(schedule(40)) == pytest.approx(0.025)
    assert float(schedule(69)) == pytest.approx(0.0125)


def test_explicit_decay_epochs_and_warmup():
    config = smoke_config(
        learning_rate=0.1, lr_decay_at_epochs=(3, 5), lr_decay_factor=0.2, warmup_epochs=1.0
    )
    schedule = train.learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(5)) == pytest.approx(0.05)
    assert float(schedule(29)) == pytest.approx(0.1)
    assert float(schedule(30)) == pytest.approx(0.02)
    assert float(schedule(50)) == pytest.approx(0.004)


def _one_step(mesh, config, batch):
    model = create_model(config)
    schedule = train.learning_rate_schedule(config, 10)
    state = train.create_train_state(config, model, jax.random.key(0), schedule)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = jax.device_put(state, replicated)
    step, _ = train.jit_steps(mesh, schedule)
    new_state, metrics = step(state, shard_batch(batch, data))
    return jax.device_get(new_state.params), float(metrics.compute()["loss"])


def test_train_step_on_8_devices_matches_1_device():
    config = smoke_config()
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 10, size=16).astype(np.int32),
    }
    params_1, loss_1 = _one_step(train.create_mesh(jax.devices()[:1]), config, batch)
    params_8, loss_8 = _one_step(train.create_mesh(), config, batch)
    assert loss_1 == pytest.approx(loss_8, rel=1e-5)
    # Cross-device sums change the float summation order. The biases of convs followed by
    # batch norm have a zero true gradient, so theirs is pure rounding noise (~1e-5 here).
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_8), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_half_precision_train_step_runs():
    config = smoke_config(half_precision=True)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 10, size=8).astype(np.int32),
    }
    params, loss = _one_step(train.create_mesh(), config, batch)
    assert np.isfinite(loss)
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))


def read_tags(workdir: str) -> set[str]:
    """The tags of every summary (scalars, images, hyper-parameters) in workdir's event files."""
    tags = set()
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_eta_shows_days_past_24_hours():
    assert train.format_duration(250) == "00:04:10"
    assert train.format_duration(32.5 * 3600) == "1d 08:30:00"
    assert train.format_duration(float("inf")) == "?"


@pytest.mark.slow
def test_smoke_config_trains_on_mock_tfds_on_8_devices(tmp_path, capsys):
    config = smoke_config(num_train_steps=12, eval_every_steps=12, learning_rate=0.02)
    with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
        final = train.train_and_evaluate(config, str(tmp_path))
    printed = capsys.readouterr().out
    for line in ("Compiling the train step...", "Compiled in", "[12/12] evaluating on"):
        assert line in printed, printed
    tags = read_tags(str(tmp_path))
    assert "attention_maps" in tags  # The picture of each evaluation, as a TensorBoard image.
    assert "_hparams_/session_start_info" in tags  # The config, as hyper-parameters.
    assert np.isfinite(final["loss"]) and 0 <= final["accuracy"] <= 1
    losses = read_scalars(str(tmp_path))["train_loss"]
    assert all(np.isfinite(v) for v in losses.values())
    assert losses[12] < losses[2], losses  # 48 examples, 4 passes: it fits them.
    assert "eval_accuracy" in read_scalars(str(tmp_path))
    assert checkpointing.load_variables(rundir.checkpoints_of(str(tmp_path)))["step"] == 12
    assert glob.glob(str(tmp_path / "pictures" / "attention_step*.png"))
    assert json.loads((tmp_path / "final_metrics.json").read_text())["step"] == 12


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """A tiny run on cluttered digits (in-process), shared by the resume/transfer tests."""
    workdir = str(tmp_path_factory.mktemp("digits"))
    config = smoke_config(
        dataset="cluttered_digits", num_train_steps=4, eval_every_steps=4, num_picture_images=0
    )
    train.train_and_evaluate(config, workdir)
    return workdir, config


@pytest.mark.slow
def test_rerun_resumes_from_latest_checkpoint(trained_digits, capsys):
    workdir, config = trained_digits
    config = smoke_config(
        dataset="cluttered_digits", num_train_steps=6, eval_every_steps=6, num_picture_images=0
    )
    train.train_and_evaluate(config, workdir)
    assert "Resuming from the checkpoint at step 4" in capsys.readouterr().out
    assert checkpointing.load_variables(rundir.checkpoints_of(workdir))["step"] == 6


@pytest.mark.slow
def test_rerun_of_a_finished_run_only_evaluates(trained_digits, capsys):
    workdir, _ = trained_digits
    steps = checkpointing.load_variables(rundir.checkpoints_of(workdir))["step"]
    config = smoke_config(
        dataset="cluttered_digits",
        num_train_steps=steps,
        eval_every_steps=steps,
        num_picture_images=0,
    )
    final = train.train_and_evaluate(config, workdir)
    assert "evaluating only" in capsys.readouterr().out
    assert np.isfinite(final["loss"])
    assert checkpointing.load_variables(rundir.checkpoints_of(workdir))["step"] == steps


@pytest.mark.slow
def test_init_from_loads_matching_layers_and_reports_new_ones(trained_digits, tmp_path, capsys):
    source, _ = trained_digits
    config = smoke_config(
        dataset="cluttered_digits",
        num_train_steps=1,
        eval_every_steps=1,
        init_from=source,
        num_picture_images=0,
    )
    config.model.num_taps = 2  # att1's estimator and the classifier's shape change.
    train.train_and_evaluate(config, str(tmp_path))
    out = capsys.readouterr().out
    assert f"init_from {source}" in out
    assert "head/classifier/kernel (shape" in out  # 3 taps -> 2 taps: new classifier input.
    assert "conv1/Conv_0/kernel" not in out.split("newly initialised")[-1]


def test_merge_pretrained_keeps_matching_shapes_only():
    new = {"a": {"kernel": jnp.zeros((2, 3))}, "b": jnp.zeros(4), "c": jnp.zeros(1)}
    old = {"a": {"kernel": np.ones((2, 3))}, "b": np.ones(5)}
    merged, loaded, fresh = checkpointing.merge_pretrained(new, old)
    assert loaded == ["a/kernel"]
    assert np.all(merged["a"]["kernel"] == 1) and np.all(merged["b"] == 0)
    assert fresh[0].startswith("b (shape") and fresh[1] == "c"


def test_init_from_without_checkpoint_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no Orbax checkpoint"):
        checkpointing.load_variables(rundir.checkpoints_of(str(tmp_path)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 12}, "batch_size=12 must be a positive multiple of the number of devices"),
        ({"eval_batch_size": 4}, "eval_batch_size=4"),
        ({"dataset": "imagenet"}, "imagenet"),
        ({"image_size": 48}, "multiple of 32"),
        ({"model.num_taps": 4}, "num_taps=4"),
        ({"model.compatibility": "cosine"}, "compatibility"),
        ({"log_every_steps": 0}, "log_every_steps"),
        ({"lr_decay_factor": 2.0}, "lr_decay_factor"),
        ({"half_precision": True, "model.conv_impl": "xla"}, "half_precision=True with"),
    ],
)
def test_impossible_config_values_fail_with_the_field_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        validation.check_config(smoke_config(**overrides))


def run_cli(workdir, *args, env=None, timeout=300):
    return run_tool(
        "main", "--config=configs/smoke.py", f"--workdir={workdir}", *args, env=env, timeout=timeout
    )


def test_cli_rejects_unknown_config_key_without_touching_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(workdir, "--config.no_such_field=1", timeout=120)
    assert result.returncode != 0
    assert "no_such_field" in result.stderr
    assert not workdir.exists()


def test_cli_missing_dataset_fails_fast_without_touching_workdir(tmp_path):
    workdir = tmp_path / "run"
    start = time.time()
    result = run_cli(workdir, f"--config.data_dir={tmp_path / 'empty'}", timeout=120)
    assert result.returncode == 2
    assert "download_and_prepare" in result.stderr
    assert time.time() - start < 60
    assert not workdir.exists()


def _digits_cli_args(steps: int) -> list[str]:
    return [
        "--config.dataset=cluttered_digits",
        f"--config.num_train_steps={steps}",
        f"--config.eval_every_steps={steps}",
        "--config.checkpoint_every_steps=2",
        "--config.log_every_steps=2",
        "--config.keep_checkpoints=10",
        "--config.num_picture_images=0",
    ]


def _finished_steps(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _run_until_checkpoint(workdir: Path, args: list[str], sig: int, min_step: int):
    """Starts a CLI run, sends `sig` once a checkpoint at >= min_step is final, returns it."""
    cmd = [sys.executable, "-m", "ltpa_jax.main", "--config=configs/smoke.py"]
    proc = subprocess.Popen(
        cmd + [f"--workdir={workdir}"] + args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(s >= min_step for s in _finished_steps(workdir)):
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=300)
    return proc.returncode, output


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    steps = 12
    args = _digits_cli_args(steps)
    reference = run_cli(tmp_path / "reference", *args, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    code, output = _run_until_checkpoint(interrupted, args, signal.SIGKILL, min_step=4)
    assert code == -signal.SIGKILL, output[-2000:]
    killed_at = max(_finished_steps(interrupted))
    assert killed_at < steps
    resumed = run_cli(interrupted, *args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from the checkpoint at step" in resumed.stdout

    final_ref = json.loads((tmp_path / "reference" / "final_metrics.json").read_text())
    final_res = json.loads((interrupted / "final_metrics.json").read_text())
    assert final_res == pytest.approx(final_ref, rel=1e-5, abs=1e-6)
    params_ref = checkpointing.load_variables(rundir.checkpoints_of(str(tmp_path / "reference")))[
        "params"
    ]
    params_res = checkpointing.load_variables(rundir.checkpoints_of(str(interrupted)))["params"]
    for a, b in zip(jax.tree.leaves(params_ref), jax.tree.leaves(params_res), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    workdir = tmp_path / "run"
    code, output = _run_until_checkpoint(workdir, _digits_cli_args(400), signal.SIGTERM, min_step=2)
    assert code == 143, output[-2000:]
    assert "SIGTERM: saved the checkpoint at step" in output
    saved = int(output.split("SIGTERM: saved the checkpoint at step ")[1].split(";")[0])
    assert saved in _finished_steps(workdir)


def test_an_interrupt_lets_the_save_in_flight_finish_first(tmp_path, monkeypatch):
    """Ctrl-C (or a notebook's stop button) right after a background save started: the
    exception propagates only once that checkpoint is committed, so a rerun finds it."""
    save, orbax_save = checkpointing.save, checkpointing.ocp.CheckpointManager.save

    def slow_orbax_save(manager, *args, **kwargs):
        time.sleep(1)  # The worker is still writing when the interrupt comes.
        return orbax_save(manager, *args, **kwargs)

    def save_then_interrupt(manager, step, *args, **kwargs):
        started = save(manager, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt
        return started

    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", slow_orbax_save)
    monkeypatch.setattr(checkpointing, "save", save_then_interrupt)
    config = smoke_config(dataset="cluttered_digits", num_train_steps=4, num_picture_images=0)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, str(tmp_path))
    assert checkpointing.list_steps(tmp_path / "checkpoints") == [1, 2]
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))


def test_hugepages_environment_is_added_only_where_it_helps():
    from ltpa_jax import cli

    env = {"PATH": "/bin"}
    madvise = "always [madvise] never\n"
    added = cli.hugepages_environment(env, madvise, ("glibc", "2.36"))
    assert added == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    kept = cli.hugepages_environment(
        {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, madvise, ("glibc", "2.39")
    )
    assert kept["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:glibc.malloc.hugetlb=1"
    assert cli.hugepages_environment(added, madvise, ("glibc", "2.36")) is None  # Done already.
    assert cli.hugepages_environment({"LTPA_HUGEPAGES": "0"}, madvise, ("glibc", "2.36")) is None
    assert cli.hugepages_environment(env, "always madvise [never]\n", ("glibc", "2.36")) is None
    assert cli.hugepages_environment(env, madvise, ("glibc", "2.31")) is None  # No tunable.
    assert cli.hugepages_environment(env, madvise, ("", "")) is None  # musl, unknown.


def test_cli_reexecutes_itself_with_huge_pages(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    probe = (
        "import os, sys; from ltpa_jax import cli; cli.rerun_with_huge_pages(); "
        "print('TUNABLES=' + os.environ.get('GLIBC_TUNABLES', ''))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    expected = cli_expected_tunables()
    assert f"TUNABLES={expected}" in result.stdout


def cli_expected_tunables() -> str:
    from ltpa_jax import cli

    environ = cli.hugepages_environment_here({})
    return environ["GLIBC_TUNABLES"] if environ else ""
