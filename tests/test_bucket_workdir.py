"""A whole run in a gs:// workdir that is not the local disk (conftest.gcs, tests/fake_gcs.py).

Training, its checkpoints (Orbax through TensorStore's GCS driver and google-cloud-storage),
resuming, config, pictures and metrics, `init_from`, `ltpa-attend` and `ltpa-analyze` all
read and write the bucket. TensorBoard's event files are the one exception: TensorFlow
writes them with its own GCS client, which has no endpoint to point at a test server, so here
they go to a local folder.
"""

import io
import json
import os

import numpy as np
import pytest
from clu import metric_writers
from conftest import override
from fake_gcs import InMemoryGCS

from configs import smoke
from ltpa_jax import analyze, attend, checkpointing, rundir, train

WORKDIR = "gs://bucket/run"


def _config(**fields):
    return override(
        smoke.get_config(),
        dataset="cluttered_digits",
        eval_every_steps=2,
        checkpoint_every_steps=2,
        num_picture_images=2,
        **fields,
    )


def _bucket_files(prefix: str) -> list[str]:
    return sorted(
        key.removeprefix(f"/bucket/{prefix}/")
        for key in InMemoryGCS.store
        if key.startswith(f"/bucket/{prefix}/")
    )


@pytest.mark.slow
def test_a_run_trains_resumes_and_is_read_back_in_a_bucket(gcs, tmp_path, monkeypatch, capsys):
    local = tmp_path / "cwd"
    local.mkdir()
    monkeypatch.chdir(local)  # A path mistaken for a local one would land here.
    events = tmp_path / "events"
    writer = metric_writers.create_default_writer
    monkeypatch.setattr(
        train.metric_writers,
        "create_default_writer",
        lambda logdir, **kw: writer(str(events / logdir.removeprefix("gs://")), **kw),
    )

    first = train.train_and_evaluate(_config(num_train_steps=2), WORKDIR)
    final = train.train_and_evaluate(_config(num_train_steps=4), WORKDIR)  # Two more steps.

    out = capsys.readouterr().out
    assert "Resuming from the checkpoint at step 2" in out, out
    files = _bucket_files("run")
    for name in (
        "config.json",
        "config_history.jsonl",  # num_train_steps changed between the runs.
        "final_metrics.json",
        "pictures/attention_step0000002.png",
        "pictures/attention_step0000004.png",
        "checkpoints/4/commit_success.txt",  # Orbax's commit marker on GCS (no rename).
    ):
        assert name in files, files
    assert checkpointing.list_steps(f"{WORKDIR}/checkpoints") == [2, 4]
    assert json.loads((gcs / "run" / "final_metrics.json").read_text())["step"] == 4
    assert final.keys() == first.keys()
    pictures = rundir.RunDir.at(WORKDIR).pictures()
    assert [p.name for p in pictures] == ["attention_step0000002.png", "attention_step0000004.png"]
    assert pictures[-1].read_bytes().startswith(b"\x89PNG")
    assert list((events / "bucket" / "run").glob("events.out.tfevents*"))

    run = rundir.open_run(WORKDIR)  # Config and variables read back from the bucket.
    assert run.step == 4 and run.config.num_train_steps == 4
    saved = checkpointing.load_variables(f"{WORKDIR}/checkpoints/2")
    assert saved["step"] == 2

    written, errors = attend.attend(WORKDIR, num_images=4, batch_size=4)
    assert not errors
    assert all(path.startswith(f"{WORKDIR}/attention/test_step4/") for path in written), written
    maps = np.load(io.BytesIO((gcs / "run/attention/test_step4/attention.npz").read_bytes()))
    assert maps["map_att3"].shape[0] == 4

    tables = analyze.localization(run, num_images=8, batch_size=8)
    assert all(str(path).startswith(f"{WORKDIR}/analysis/") for path in tables.values()), tables
    assert any(name.startswith("analysis/localization_test_step4") for name in _bucket_files("run"))

    finetune = "gs://bucket/finetune"
    train.train_and_evaluate(_config(num_train_steps=2, init_from=WORKDIR), finetune)
    out = capsys.readouterr().out
    assert f"init_from {WORKDIR} (step 4): loaded" in out, out
    # Step 1: Orbax saves the first step of a fresh run (the first run's was rotated out).
    assert checkpointing.list_steps(f"{finetune}/checkpoints") == [1, 2]

    assert list(local.iterdir()) == []  # Nothing went to the local disk.
    assert not os.path.exists(os.path.join(local, "gs:"))
