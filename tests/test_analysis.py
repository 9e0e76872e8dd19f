"""Analysis tools on a real checkpoint: loading a run, `ltpa-attend`, `ltpa-analyze`, probes.

One smoke run on cluttered digits (8 steps of a 1/16-width VGG-att3) serves every test. The
command-line tools run as subprocesses, as users run them (their flags are process-global).
"""

import csv
import os
import shutil

import numpy as np
import pytest
from conftest import run_tool
from PIL import Image

from configs import smoke
from ltpa_jax import analyze, data, features, localization, rundir, train, visualize
from ltpa_jax.inference import predict_with_attention
from ltpa_jax.models import create_model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A finished smoke run on cluttered digits (boxes available)."""
    path = tmp_path_factory.mktemp("run") / "smoke_digits"
    config = smoke.get_config()
    config.dataset = "cluttered_digits"
    config.num_picture_images = 0
    train.train_and_evaluate(config, str(path))
    return path


def test_load_run_gives_the_trained_model(workdir):
    config, model, variables, step, _ = rundir.open_run(str(workdir))
    assert step == 8 and config.dataset == "cluttered_digits"
    batch = next(data.Pipeline.from_config(config).eval_batches("test"))
    logits = model.apply(variables, batch["image"], train=False)
    assert logits.shape == (config.eval_batch_size, 10) and np.isfinite(logits).all()


def test_load_run_errors_name_the_fix(workdir, tmp_path, capsys):
    with pytest.raises(rundir.RunDirError, match="config.json"):
        rundir.open_run(str(tmp_path))
    with pytest.raises(rundir.RunDirError, match=r"there are \[.*8\]"):
        rundir.open_run(str(workdir), step=3)
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    for root, _, files in os.walk(broken / "checkpoints" / "8"):
        for name in files:
            if not name.startswith("_"):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    # The damaged newest checkpoint is named and the older intact one is used; asked for by
    # step, the damaged one is refused with the same words.
    capsys.readouterr()
    assert rundir.open_run(str(broken)).step == 6
    assert "step 8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot be read"):
        rundir.open_run(str(broken), step=8)


def test_load_image_file_resizes_and_normalises_like_eval(workdir, tmp_path):
    config = rundir.RunDir.at(workdir).read_config()
    pixels = np.zeros((50, 70, 3), np.uint8)
    pixels[:, :35] = 255
    Image.fromarray(pixels).save(tmp_path / "half.png")
    pipeline = data.Pipeline.from_config(config)
    image = pipeline.load_image_file(str(tmp_path / "half.png"))
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    shown = pipeline.denormalize(image[None])[0]
    assert shown[:, :12].min() > 0.99 and shown[:, -12:].max() < 0.01
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png: cannot be decoded"):
        pipeline.load_image_file(str(tmp_path / "bad.png"))


def test_grid_without_labels_and_with_boxes(tmp_path):
    images = np.zeros((2, 32, 32, 3), np.float32)
    maps = {"att2": np.random.default_rng(0).random((2, 32, 32))}
    boxes = np.array([[4, 4, 12, 12], [0, 0, 32, 32]], np.float32)
    fig = visualize.attention_grid(images, maps, None, np.array([1, 2]), boxes=boxes)
    assert fig.axes[0].get_title() == "pred: 1"
    assert len(fig.axes[0].patches) == 1 and len(fig.axes[1].patches) == 1
    with pytest.raises(ValueError, match=r"boxes must be \[B, 4\]"):
        visualize.attention_grid(images, maps, None, np.array([1, 2]), boxes=boxes[:1])


def test_export_features_and_linear_probe(workdir):
    config, model, variables, _, _ = rundir.open_run(str(workdir))
    exported = features.export_features(
        model, variables, data.Pipeline.from_config(config).eval_batches("test")
    )
    n = config.num_digits_test
    assert exported["labels"].shape == (n,)
    assert exported["global"].shape[0] == n
    widths = [exported[k].shape[1] for k in ("att1", "att2", "att3")]
    assert exported[features.ATTENTION].shape == (n, sum(widths))
    # Separable by construction: a probe on features that encode the label must be perfect.
    onehot = np.eye(10, dtype=np.float32)[exported["labels"]]
    assert features.linear_probe(onehot, exported["labels"], onehot, exported["labels"]) == 1.0
    accuracy = features.probe_all(exported, exported)
    assert set(accuracy) == {"global", "att1", "att2", "att3", features.ATTENTION}
    assert all(0.0 <= a <= 1.0 for a in accuracy.values())
    with pytest.raises(ValueError, match="same C"):
        features.linear_probe(onehot, exported["labels"], onehot[:, :3], exported["labels"])


def test_localization_on_mock_cub_scores_against_segmentation_masks():
    import jax
    import tensorflow_datasets as tfds

    config = smoke.get_config()
    config.dataset, config.image_size, config.model.num_classes = "caltech_birds2011", 64, 200
    config.eval_batch_size = 8
    model = create_model(config)
    variables = model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        statistics, scores, batch = analyze.localization_scores(
            data.Pipeline.from_config(config),
            model,
            variables,
            split="test",
            num_images=8,
            batch_size=8,
            threshold="otsu",
        )
    assert set(statistics) == {"att1", "att2", "att3"}
    assert set(scores) == {"att1", "att2", "att3", "combined"}
    # The same numbers by hand from the batch: the Jaccard is against the CUB masks.
    _, maps = predict_with_attention(model, variables, batch["image"])
    expected = localization.finalize(
        localization.localization_sums(
            maps, batch["box"], batch["mask"], segmentation=batch["segmentation"]
        )
    )
    for name in scores:
        for key in ("pointing", "mass", "jaccard", "count"):
            # The untrained maps are nearly uniform, so Otsu's threshold on the combined map sits
            # where a float32 rounding of another compiled program moves a pixel across it
            # (seen: 0.376938 vs 0.376915, one pixel of the 8 masks): 1e-4 for the Jaccard.
            tolerance = 1e-4 if key == "jaccard" else 1e-5
            assert scores[name][key] == pytest.approx(expected[name][key], abs=tolerance)


@pytest.mark.slow
def test_attend_cli_on_a_split(workdir, tmp_path):
    out = tmp_path / "maps"
    result = run_tool("attend", f"--workdir={workdir}", "--num_images=20", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert "[20/20 images]" in result.stdout
    data = np.load(out / "attention.npz")
    assert data["labels"].shape == (20,) and (data["labels"] >= 0).all()
    assert data["boxes"].shape == (20, 4)
    assert data["map_att3"].shape == (20, 32, 32) and data["raw_att3"].shape == (20, 8, 8)
    assert data["raw_att1"].shape == (20, 32, 32)
    np.testing.assert_allclose(data["raw_att2"].sum(axis=(1, 2)), 1.0, rtol=1e-4)
    assert sorted(p.name for p in out.glob("*.png")) == ["grid_000.png", "grid_001.png"]


@pytest.mark.slow
def test_attend_cli_on_a_folder_goes_past_an_unreadable_file(workdir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((300, 200, 3), 30, np.uint8)).save(folder / "b.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "notes.txt").write_text("not an image, not an image suffix")
    out = tmp_path / "maps"
    result = run_tool("attend", f"--workdir={workdir}", f"--images={folder}", f"--out={out}")
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "1 file(s) could not be read" in result.stderr
    data = np.load(out / "attention.npz")
    assert list(data["names"]) == ["a.png", "b.jpg"]
    assert (data["labels"] == -1).all() and data["map_att2"].shape == (2, 32, 32)
    assert (out / "grid_000.png").stat().st_size > 0


@pytest.mark.slow
def test_attend_cli_without_a_run_fails_clearly(tmp_path):
    result = run_tool("attend", f"--workdir={tmp_path}")
    assert result.returncode == 2
    assert "no config.json" in result.stderr


@pytest.mark.slow
def test_analyze_localization_prints_and_writes_the_table(workdir, tmp_path):
    result = run_tool("analyze", "localization", f"--workdir={workdir}", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "pointing" in result.stdout and "near_zero_fraction" in result.stdout
    with open(tmp_path / "localization_test_step8.csv") as f:
        rows = {row["map"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"att1", "att2", "att3", "combined"}
    for row in rows.values():
        assert 0.0 <= float(row["pointing"]) <= 1.0 and 0.0 <= float(row["mass"]) <= 1.0
    with open(tmp_path / "statistics_test_step8.csv") as f:
        assert [row["tap"] for row in csv.DictReader(f)] == ["att1", "att2", "att3"]
    assert (tmp_path / "attention_test_step8.png").stat().st_size > 0


@pytest.mark.slow
def test_analyze_robustness_compares_runs_on_one_plot(workdir, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(workdir, other)
    result = run_tool(
        "analyze",
        "robustness",
        f"--workdir={workdir}",
        f"--compare={other}",
        "--epsilons=0,8",
        "--num_images=32",
        "--batch_size=16",
        f"--out={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "robustness_fgsm_step8.csv") as f:
        rows = list(csv.DictReader(f))
    labels = ["smoke_digits (VGG-att3)", "other_run (VGG-att3)"]
    assert [row["epsilon_255"] for row in rows] == ["0", "8"]
    assert all(label in rows[0] for label in labels)
    # Identical runs, identical numbers; the attack cannot help.
    assert rows[1][labels[0]] == rows[1][labels[1]]
    assert float(rows[1][labels[0]]) <= float(rows[0][labels[0]])
    assert (tmp_path / "robustness_fgsm_step8.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_analyze_probe_on_another_dataset(workdir, tmp_path):
    result = run_tool(
        "analyze",
        "probe",
        f"--workdir={workdir}",
        "--probe_train_images=48",
        "--num_images=32",
        "--batch_size=16",
        f"--out={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "probe_cluttered_digits_step8.csv") as f:
        rows = {row["descriptor"]: float(row["accuracy"]) for row in csv.DictReader(f)}
    assert set(rows) == {"global", "att1", "att2", "att3", "attention"}
    train_features = np.load(tmp_path / "features_cluttered_digits_train_step8.npz")
    assert train_features["labels"].shape == (48,)
