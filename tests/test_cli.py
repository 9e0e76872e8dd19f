"""The command-line layer as a user meets it: --help, and every user error as one clear line.

Each bad input must end with exit status 2, one `error:` line naming the flag, field or file,
the value and the fix, no traceback, and nothing written to (or changed in) the workdir.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_tool

SMOKE = os.path.join(ROOT, "configs", "smoke.py")
DIGITS = [
    "--config.dataset=cluttered_digits",
    "--config.num_picture_images=0",
    "--config.log_every_steps=2",
]


def assert_refused(result, *words: str) -> str:
    """Exit status 2, no traceback, and an `error:` line holding every word; returns it."""
    assert result.returncode == 2, (result.returncode, result.stdout[-1500:], result.stderr[-1500:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its contents (to show that nothing changed)."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 4-step smoke run on cluttered digits, checkpoints at 2 and 4."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    result = run_tool(
        "main",
        f"--config={SMOKE}",
        f"--workdir={workdir}",
        *DIGITS,
        "--config.num_train_steps=4",
        "--config.eval_every_steps=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.parametrize(
    ("module", "flags"),
    [
        ("main", ["--config", "--workdir", "--num_processes"]),
        ("attend", ["--workdir", "--images", "--num_images", "--batch_size", "--step"]),
        ("analyze", ["--workdir", "--threshold", "--epsilons", "--num_images", "--batch_size"]),
        ("prepare", ["--config"]),
    ],
)
def test_help_lists_the_tools_own_flags(module, flags):
    result = run_tool(module, "--help", timeout=120)
    for flag in flags:
        assert flag in result.stdout, (flag, result.stdout[-2000:])
    assert "Try --helpfull" not in result.stdout.split("\n")[0]
    if module == "analyze":
        for command in ("localization", "robustness", "probe"):
            assert command in result.stdout


def test_start_up_prints_no_tensorflow_log_lines():
    result = run_tool("attend", "--workdir=/nonexistent/run", timeout=120)
    assert "absl::InitializeLog" not in result.stderr
    assert "oneDNN" not in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--config=/nonexistent/config.py"], ["--config=/nonexistent/config.py", "no such"]),
        ([f"--config={SMOKE}", "--config.foo=1"], ["--config.foo=1", "unknown config field"]),
        (
            [f"--config={SMOKE}", "--config.model.num_tap=1"],
            ["config.model.num_tap", "did you mean config.model.num_taps"],
        ),
        ([f"--config={SMOKE}", "--config.learning_rate=0"], ["learning_rate", "0"]),
        ([f"--config={SMOKE}", "--config.learning_rate=-0.1"], ["learning_rate", "-0.1"]),
        ([f"--config={SMOKE}", "--config.learning_rate=nan"], ["learning_rate", "nan"]),
        ([f"--config={SMOKE}", "--config.batch_size=12"], ["batch_size", "12"]),
        (
            [f"--config={SMOKE}", *DIGITS, "--config.init_from=/nonexistent/run"],
            ["init_from", "/nonexistent/run"],
        ),
    ],
)
def test_train_refuses_bad_input_with_one_line(tmp_path, args, words):
    workdir = tmp_path / "run"
    result = run_tool("main", *args, f"--workdir={workdir}", timeout=180)
    assert_refused(result, *words)
    assert snapshot(workdir) == {}


def test_a_config_file_that_does_not_load_is_named(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    result = run_tool("main", f"--config={broken}", f"--workdir={tmp_path / 'run'}")
    assert_refused(result, str(broken), "could not be loaded")


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    workdir = tmp_path / "file"
    workdir.write_text("not a folder")
    result = run_tool("main", f"--config={SMOKE}", *DIGITS, f"--workdir={workdir}")
    assert_refused(result, str(workdir), "is a file")
    assert workdir.read_text() == "not a folder"


def test_analysis_tools_refuse_bad_flags_with_one_line(trained):
    before = snapshot(trained)
    assert_refused(run_tool("attend", f"--workdir={trained}", "--batch_size=0"), "batch_size")
    assert_refused(
        run_tool("analyze", "robustness", f"--workdir={trained}", "--epsilons=abc"),
        "--epsilons",
        "abc",
    )
    assert_refused(
        run_tool("analyze", "localization", f"--workdir={trained}", "--threshold=2"),
        "--threshold",
    )
    assert_refused(run_tool("attend", f"--workdir={trained}", "--step=3"), "step 3", "[2, 4]")
    assert_refused(run_tool("attend", f"--workdir={trained.parent}"), "config.json")
    assert snapshot(trained) == before


def test_an_incompatible_rerun_is_refused_before_anything_is_written(trained):
    before = snapshot(trained)
    result = run_tool(
        "main",
        f"--config={SMOKE}",
        f"--workdir={trained}",
        *DIGITS,
        "--config.num_train_steps=6",
        "--config.model.width=0.25",
    )
    assert_refused(result, "config.model.width", "0.0625", "0.25", "another --workdir")
    assert snapshot(trained) == before


def test_a_compatible_rerun_continues_and_records_the_change(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    result = run_tool(
        "main",
        f"--config={SMOKE}",
        f"--workdir={workdir}",
        *DIGITS,
        "--config.num_train_steps=6",
        "--config.eval_every_steps=6",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from the checkpoint at step 4" in result.stdout
    assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == 6
    history = (workdir / "config_history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["num_train_steps"] == [4, 6]


def test_divergence_stops_before_saving_and_keeps_the_good_checkpoints(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    result = run_tool(
        "main",
        f"--config={SMOKE}",
        f"--workdir={workdir}",
        *DIGITS,
        "--config.num_train_steps=12",
        "--config.learning_rate=1e38",
    )
    line = assert_refused(result, "diverged", "step 4", "learning_rate")
    assert "kept" in line
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]
    resumed = run_tool("attend", f"--workdir={workdir}", "--num_images=4", "--batch_size=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint at step 4" in resumed.stdout


def test_a_bucket_workdir_without_google_cloud_storage_names_the_install():
    pytest.importorskip("tensorflow")  # The data layer; the check itself needs no bucket.
    hidden = (  # The test extra installs google-cloud-storage; this process goes without.
        "import runpy, sys; sys.modules['google.cloud.storage'] = None; "
        "sys.argv = ['ltpa-attend', '--workdir=gs://no-such-bucket/run']; "
        "runpy.run_module('ltpa_jax.attend', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", hidden], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert_refused(result, "gs://no-such-bucket/run", "google-cloud-storage", "[gcs]")


def test_tensorflow_errors_about_a_bucket_are_one_line_naming_the_sign_in(capsys):
    """TensorFlow's GCS client (tf.io.gfile: epath and the TensorBoard writer) raises its own
    errors; the guard turns those about a gs:// path into the usual one-line error."""
    tf = pytest.importorskip("tensorflow")
    from ltpa_jax import cli

    unreachable = tf.errors.FailedPreconditionError(
        None,
        None,
        "{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost}} Error "
        "executing an HTTP request: libcurl code 6 meaning 'Could not resolve hostname'\n\t"
        "when reading gs://bucket/run/",
    )

    def main(argv):
        raise unreachable

    with pytest.raises(SystemExit) as exit_info:
        cli._guarded(main)(["ltpa-train"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Error executing an HTTP request")
    assert "when reading gs://bucket/run/. Check the bucket" in err
    assert "auth.authenticate_user()" in err
    assert "function_node" not in err
    # TensorFlow errors about anything else stay bugs, with their traceback.
    assert cli.bucket_error(tf.errors.InvalidArgumentError(None, None, "bad shape")) is None
    with pytest.raises(RuntimeError):
        cli._guarded(lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")))([])


def test_a_run_trained_on_8_devices_is_read_and_fine_tuned_on_1(trained, tmp_path):
    """Train on a TPU, look at the maps on a laptop: the `trained` run used 8 devices."""
    one_device = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    maps = run_tool(
        "attend",
        f"--workdir={trained}",
        "--num_images=4",
        f"--out={tmp_path / 'maps'}",
        env=one_device,
    )
    assert maps.returncode == 0, maps.stderr[-3000:]
    assert (tmp_path / "maps" / "attention.npz").exists()
    tuned = run_tool(
        "main",
        f"--config={SMOKE}",
        f"--workdir={tmp_path / 'tuned'}",
        *DIGITS,
        f"--config.init_from={trained}",
        "--config.num_train_steps=2",
        "--config.eval_every_steps=2",
        env=one_device,
    )
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "on 1 cpu device(s)" in tuned.stdout
    assert f"init_from {trained} (step 4): loaded" in tuned.stdout
