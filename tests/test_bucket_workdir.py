"""A whole run in a gs:// workdir that is not the local disk (conftest.gcs, tests/fake_gcs.py).

Every client reaches the bucket as on Colab: TensorFlow's GCS client (`etils.epath`: config,
history, pictures, metrics, Orbax's folders; the TensorBoard writer), TensorStore's GCS driver
(Orbax's arrays) and google-cloud-storage (Orbax's bucket query). Training, resuming,
`init_from`, `ltpa-attend` and `ltpa-analyze` read and write the bucket, and nothing lands on
the local disk.
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import override

from configs import smoke
from ltpa_jax import analyze, attend, checkpointing, rundir, train


def _config(**fields):
    return override(
        smoke.get_config(),
        dataset="cluttered_digits",
        eval_every_steps=2,
        checkpoint_every_steps=2,
        num_picture_images=2,
        **fields,
    )


def _event_tags(workdir: str) -> set[str]:
    """The tags of a workdir's TensorBoard events, read back through TensorFlow's GCS client."""
    tags = set()
    for path in tf.io.gfile.glob(f"{workdir}/events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_a_run_trains_resumes_and_is_read_back_in_a_bucket(gcs, tmp_path, monkeypatch, capsys):
    local = tmp_path / "cwd"
    local.mkdir()
    monkeypatch.chdir(local)  # A bucket path taken for a local one would land here.
    workdir = f"gs://{gcs.name}/run"

    first = train.train_and_evaluate(_config(num_train_steps=2), workdir)
    final = train.train_and_evaluate(_config(num_train_steps=4), workdir)  # Two more steps.

    out = capsys.readouterr().out
    assert "Resuming from the checkpoint at step 2" in out, out
    names = gcs.names("run/")
    for name in (
        "config.json",
        "config_history.jsonl",  # num_train_steps changed between the runs.
        "final_metrics.json",
        "pictures/attention_step0000002.png",
        "pictures/attention_step0000004.png",
        "checkpoints/4/commit_success.txt",  # Orbax's commit marker on GCS (no rename).
    ):
        assert f"run/{name}" in names, names
    assert checkpointing.list_steps(f"{workdir}/checkpoints") == [2, 4]
    assert json.loads((gcs.path / "run" / "final_metrics.json").read_text())["step"] == 4
    assert final.keys() == first.keys()
    pictures = rundir.RunDir.at(workdir).pictures()
    assert [p.name for p in pictures] == ["attention_step0000002.png", "attention_step0000004.png"]
    assert pictures[-1].read_bytes().startswith(b"\x89PNG")
    tags = _event_tags(workdir)  # TensorBoard: losses, the pictures and the config.
    expected = {"train_loss", "eval_accuracy", "attention_maps", "_hparams_/session_start_info"}
    assert expected <= tags, tags

    run = rundir.open_run(workdir)  # Config and variables read back from the bucket.
    assert run.step == 4 and run.config.num_train_steps == 4
    assert checkpointing.load_variables(f"{workdir}/checkpoints/2")["step"] == 2

    written, errors = attend.attend(workdir, num_images=4, batch_size=4)
    assert not errors
    assert all(path.startswith(f"{workdir}/attention/test_step4/") for path in written), written
    npz = (gcs.path / "run" / "attention" / "test_step4" / "attention.npz").read_bytes()
    assert np.load(io.BytesIO(npz))["map_att3"].shape[0] == 4

    tables = analyze.localization(run, num_images=8, batch_size=8)
    assert all(str(path).startswith(f"{workdir}/analysis/") for path in tables.values()), tables
    assert any(name.startswith("run/analysis/localization_test_step4") for name in gcs.names())

    finetune = f"gs://{gcs.name}/finetune"
    train.train_and_evaluate(_config(num_train_steps=2, init_from=workdir), finetune)
    assert f"init_from {workdir} (step 4): loaded" in capsys.readouterr().out
    # Step 1: Orbax saves the first step of a fresh run (the first run's was rotated out).
    assert checkpointing.list_steps(f"{finetune}/checkpoints") == [1, 2]

    assert list(local.iterdir()) == []  # Nothing went to the local disk.
    assert not os.path.exists(os.path.join(local, "gs:"))
