"""Two processes on one machine form one 8-device run, as two hosts of a TPU slice would.

Each process has 4 forced CPU devices, joins through `jax.distributed` (gloo collectives on
CPU), reads its own half of the data, and they train, evaluate and checkpoint together.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_evaluate_and_checkpoint_as_one_run(tmp_path):
    workdir = tmp_path / "run"
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags)
    args = [
        sys.executable,
        "-m",
        "ltpa_jax.main",
        "--config=configs/smoke.py",
        f"--workdir={workdir}",
        "--config.dataset=cluttered_digits",
        "--config.num_train_steps=4",
        "--config.eval_every_steps=4",
        "--config.checkpoint_every_steps=2",
        "--config.num_picture_images=2",
        f"--coordinator_address=127.0.0.1:{free_port()}",
        "--num_processes=2",
    ]
    procs = [
        subprocess.Popen(
            args + [f"--process_id={i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "on 8 cpu device(s)" in outputs[0]
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final["step"] == 4 and 0 <= final["accuracy"] <= 1
    assert (workdir / "checkpoints" / "4").is_dir()
    assert list((workdir / "pictures").glob("attention_step*.png"))
