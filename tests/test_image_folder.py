"""The image-folder dataset (`data.image_folder`): layouts, the fixed split, masks, the clear
errors, and a small generated folder through training, ltpa-attend, localization against its
masks and the probe.

The folder: 3 classes ("cat", "dog", "emu"), 4 training and 2 test images each, 32x32 PNGs (one
test image a 40x30 JPEG), and a mask per image: a square of foreground whose place is known.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from conftest import override
from PIL import Image

from configs import smoke
from ltpa_jax import analyze, attend, data, localization, rundir, train, validation
from ltpa_jax.data import image_folder

CLASSES = ("cat", "dog", "emu")
TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 2
SIZE = 32
SQUARE = (8, 24)  # Rows and columns [8, 24) of every mask are foreground.


def _image(label: int, index: int) -> np.ndarray:
    """A 32x32 RGB image: the class's colour, noise, and a brighter square where the mask is."""
    rng = np.random.default_rng(100 * label + index)
    pixels = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    pixels[..., label] += 120
    lo, hi = SQUARE
    pixels[lo:hi, lo:hi] += 60
    return pixels


def _mask(label_image: bool = False) -> np.ndarray:
    lo, hi = SQUARE
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[lo:hi, lo:hi] = 1 if label_image else 255
    return mask


def make_folder(root: Path, *, split_folders: bool = True, masks: bool = True) -> Path:
    """Writes the test folder under `root`: images in `root/images`, masks in `root/masks`."""
    images, mask_root = root / "images", root / "masks"
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for label, name in enumerate(CLASSES):
            parts = (split, name) if split_folders else (name,)
            image_dir, mask_dir = images.joinpath(*parts), mask_root.joinpath(*parts)
            image_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                stem = f"{split}_{i}"
                if split == "train" and label == 2 and i == 3:
                    stem += "_émeu"  # Any file name: not only ASCII.
                if split == "test" and label == 1 and i == 1:  # A JPEG of another size.
                    Image.fromarray(_image(label, 50 + i)).resize((40, 30)).save(
                        image_dir / f"{stem}.jpg", quality=95
                    )
                    Image.fromarray(_mask()).resize((40, 30), Image.NEAREST).save(
                        mask_dir / f"{stem}.png"
                    )
                    continue
                Image.fromarray(_image(label, i if split == "train" else 50 + i)).save(
                    image_dir / f"{stem}.png"
                )
                # One mask is a label image of 0s and 1s, as some datasets ship them.
                label_image = split == "test" and label == 2 and i == 0
                Image.fromarray(_mask(label_image)).save(mask_dir / f"{stem}.png")
    if not masks:
        import shutil

        shutil.rmtree(mask_root)
    return root


def folder_config(root: Path, **fields):
    """The smoke config on the folder: 3 classes, batches of 8 (the 8 forced CPU devices)."""
    config = smoke.get_config()
    config.dataset = "image_folder"
    config.image_folder = str(root / "images")
    config.image_folder_masks = str(root / "masks") if (root / "masks").exists() else ""
    config.model.num_classes = len(CLASSES)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.shuffle_buffer = 64
    config.num_picture_images = 0
    return override(config, **fields)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


# ---------------------------------------------------------------------------------------------
# Layouts and the fixed split.


def test_train_and_test_sub_folders_give_the_classes_splits_and_masks(folder):
    scanned = image_folder.scan(str(folder / "images"), masks=str(folder / "masks"))
    assert scanned.class_names == CLASSES and scanned.has_masks
    assert len(scanned.train) == 3 * TRAIN_PER_CLASS and len(scanned.test) == 3 * TEST_PER_CLASS
    assert scanned.train.labels == (0,) * 4 + (1,) * 4 + (2,) * 4
    assert scanned.test.labels == (0, 0, 1, 1, 2, 2)
    assert os.path.basename(scanned.test.files[3]) == "test_1.jpg"
    for image, mask in zip(scanned.test.files, scanned.test.masks, strict=True):
        relative = os.path.relpath(image, folder / "images")
        assert os.path.relpath(mask, folder / "masks") == os.path.splitext(relative)[0] + ".png"
    info = data.get_dataset_info("image_folder")
    assert info.num_classes == 0  # The template: the folder decides.
    resolved = scanned.dataset_info(info)
    assert resolved.num_classes == 3 and resolved.has_segmentation and not resolved.has_box
    assert data.dataset_info(folder_config(folder)) == resolved
    assert data.dataset_info(override(folder_config(folder), dataset="cifar10")).num_classes == 10


def test_a_fraction_splits_each_class_the_same_way_every_time(tmp_path):
    root = make_folder(tmp_path, split_folders=False, masks=False) / "images"
    first = image_folder.scan(str(root), test_fraction=0.4)
    again = image_folder.scan(str(root), test_fraction=0.4)
    assert first == again  # Fixed: no seed from the config, the same split every time.
    assert first.test.labels == (0, 0, 1, 1, 2, 2)  # round(0.4 * 6) = 2 of each class's 6.
    assert first.train.labels == (0,) * 4 + (1,) * 4 + (2,) * 4
    assert not set(first.train.files) & set(first.test.files)
    every = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert sorted(first.train.files + first.test.files) == every
    tiny = image_folder.scan(str(root), test_fraction=0.01)  # Still one test image per class.
    assert tiny.test.labels == (0, 1, 2)
    only_test = image_folder.scan(str(root), test_fraction=1.0)  # For scoring only.
    assert len(only_test.train) == 0 and len(only_test.test) == 18


def test_masks_are_read_as_foreground(folder):
    for path in (folder / "masks" / "test" / "emu").iterdir():  # 0/255 and a 0/1 label image.
        mask = image_folder.decode_mask(str(path))
        assert mask.shape == (SIZE, SIZE, 1) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask[..., 0], _mask())


# ---------------------------------------------------------------------------------------------
# The pipeline.


def test_pipeline_streams_evaluation_with_masks_and_exact_resume(folder):
    config = folder_config(folder)
    validation.check_config(config)
    pipeline = data.Pipeline.from_config(config)
    assert pipeline.class_names == list(CLASSES)
    assert pipeline.split_size("train") == 12 and pipeline.split_size("test") == 6
    assert pipeline.steps_per_epoch == 1 and not pipeline.supports_device_input
    stream = [next(pipeline.train_batches()) for _ in range(1)]
    batches = list(zip(range(3), pipeline.train_batches(), strict=False))
    resumed = list(zip(range(2), pipeline.train_batches(start_step=1), strict=False))
    for (_, a), (_, b) in zip(batches[1:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(stream[0]["image"], batches[0][1]["image"])
    first = batches[0][1]
    assert first["image"].shape == (8, SIZE, SIZE, 3) and first["image"].dtype == np.float32
    assert set(first["label"]) <= {0, 1, 2}

    (batch,) = list(pipeline.eval_batches())  # 6 images, padded to one batch of 8.
    assert set(batch) == {"image", "label", "mask", "segmentation"}
    np.testing.assert_array_equal(batch["mask"], [True] * 6 + [False] * 2)
    np.testing.assert_array_equal(batch["label"][:6], [0, 0, 1, 1, 2, 2])
    assert batch["segmentation"].shape == (8, SIZE, SIZE)
    for row in (0, 1, 2, 4, 5):  # Stored at the input size: the mask itself.
        np.testing.assert_array_equal(batch["segmentation"][row], _mask() / 255)
    resized = batch["segmentation"][3]  # The 40x30 one, resized: the square, softened.
    assert resized[12:20, 12:20].min() > 0.5 and resized[:4].max() < 0.5
    # The evaluation image is what ltpa-attend --images reads from the file.
    files = pipeline._folder.test.files
    for row in (0, 3):
        expected = pipeline.load_image_file(files[row])
        np.testing.assert_allclose(batch["image"][row], expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Errors that name the field, the path and the fix.


def _error(config) -> str:
    with pytest.raises(validation.ConfigError) as error:
        validation.check_config(config)
    return str(error.value)


def test_errors_name_the_folder_and_the_fix(folder, tmp_path):
    config = folder_config(folder)
    assert "config.image_folder, which is empty" in _error(override(config, image_folder=""))
    missing = str(tmp_path / "nowhere")
    assert f"config.image_folder={missing!r} is not a folder" in _error(
        override(folder_config(folder), image_folder=missing)
    )
    message = _error(override(folder_config(folder), **{"model.num_classes": 10}))
    assert "has 3 classes (cat, dog, emu)" in message
    assert "set --config.model.num_classes=3" in message
    message = _error(override(folder_config(folder), image_folder_test_fraction=0.2))
    assert "use --config.image_folder_test_fraction=0" in message
    assert "image_folder_test_fraction=1.5 must be in [0, 1]" in _error(
        override(folder_config(folder), image_folder_test_fraction=1.5)
    )
    message = _error(override(folder_config(folder), dataset="cifar10"))
    assert "read only with config.dataset='image_folder'" in message

    flat = make_folder(tmp_path / "flat", split_folders=False, masks=False)
    message = _error(folder_config(flat))
    assert "has no train/ and test/ sub-folder" in message
    assert "--config.image_folder_test_fraction=0.2" in message

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    assert "holds no class sub-folders" in _error(
        override(folder_config(folder), image_folder=str(empty))
    )

    uneven = make_folder(tmp_path / "uneven", masks=False)
    (uneven / "images" / "test" / "emu").rename(uneven / "images" / "test" / "gnu")
    message = _error(folder_config(uneven))
    assert "differ (only in train/: ['emu']; only in test/: ['gnu'])" in message

    broken = make_folder(tmp_path / "broken", masks=False)
    bad = broken / "images" / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"not a picture")
    message = _error(folder_config(broken))
    assert str(bad) in message and "cannot be read as an image" in message

    no_mask = make_folder(tmp_path / "no_mask")
    (no_mask / "masks" / "test" / "cat" / "test_1.png").unlink()
    message = _error(folder_config(no_mask))
    assert "1 of 6 images have no mask" in message
    assert str(no_mask / "images" / "test" / "cat" / "test_1.png") in message


def test_a_file_whose_pixels_do_not_decode_is_named_when_read(tmp_path):
    """A truncated PNG passes the header check; reading it names it, as a ValueError."""
    root = make_folder(tmp_path, masks=False)
    for split in ("train", "test"):
        path = root / "images" / split / "dog" / f"{split}_0.png"
        path.write_bytes(path.read_bytes()[:60])
    config = folder_config(root)
    validation.check_config(config)
    pipeline = data.Pipeline.from_config(config)
    for read in (lambda: next(pipeline.train_batches()), lambda: list(pipeline.eval_batches())):
        with pytest.raises(image_folder.ImageFolderError, match="cannot be decoded") as error:
            read()
        assert "dog" in str(error.value) and "Replace or remove the file" in str(error.value)


# ---------------------------------------------------------------------------------------------
# Localization against masks: a case worked by hand.


def test_localization_against_masks_known_jaccard_pointing_and_mass():
    top = np.zeros((1, 8, 8), np.float32)
    top[0, :4] = 1.0  # Attends to the top half.
    peak = np.zeros((1, 8, 8), np.float32)
    peak[0, 6, 1] = 1.0  # One pixel, bottom left.
    left = np.zeros((1, 8, 8), np.float32)
    left[0, :, :4] = 1.0  # The mask: the left half (as the pipeline gives it, in [0, 1]).
    sums = localization.localization_sums(
        {"top": top, "peak": peak}, None, np.ones(1, bool), threshold=0.5, segmentation=left
    )
    scores = localization.finalize(sums)
    # Top half vs left half: intersection 16, union 48.
    assert scores["top"]["jaccard"] == pytest.approx(1 / 3)
    assert scores["top"]["pointing"] == 1.0  # First arg-max (0, 0) is in the left half.
    assert scores["top"]["mass"] == pytest.approx(0.5)
    assert scores["peak"]["jaccard"] == pytest.approx(1 / 32)  # 1 pixel of 32.
    assert scores["peak"]["pointing"] == 1.0 and scores["peak"]["mass"] == pytest.approx(1.0)
    assert scores["combined"]["count"] == 1.0
    with pytest.raises(ValueError, match="boxes and segmentation are both None"):
        localization.localization_sums({"top": top}, None, np.ones(1, bool))


# ---------------------------------------------------------------------------------------------
# A run trained on the folder: ltpa-attend, localization against the masks, the probe.


@pytest.fixture(scope="module")
def workdir(folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "folder_run"
    config = folder_config(folder, num_train_steps=2, eval_every_steps=2)
    config.checkpoint_every_steps = 2
    metrics = train.train_and_evaluate(config, str(path))
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0
    return path


@pytest.mark.slow
def test_run_on_the_folder_attends_scores_masks_and_probes(workdir, folder, tmp_path):
    run = rundir.open_run(str(workdir))
    assert run.step == 2 and run.config.image_folder == str(folder / "images")

    written, errors = attend.attend(str(workdir), out=str(tmp_path / "maps"))
    assert not errors
    maps = np.load(tmp_path / "maps" / "attention.npz")
    np.testing.assert_array_equal(maps["labels"], [0, 0, 1, 1, 2, 2])
    assert maps["map_att3"].shape == (6, SIZE, SIZE)

    pipeline = data.Pipeline.from_config(run.config)
    statistics, scores, batch = analyze.localization_scores(
        pipeline,
        run.model,
        run.variables,
        split="test",
        num_images=-1,
        batch_size=8,
        threshold="otsu",
    )
    assert set(scores) == {"att1", "att2", "att3", "combined"}
    # The same numbers by hand, from ltpa-attend's maps of the same images and the masks.
    taps = {name: maps[f"map_{name}"] for name in ("att1", "att2", "att3")}
    expected = localization.finalize(
        localization.localization_sums(
            taps, None, np.ones(6, bool), segmentation=batch["segmentation"][:6]
        )
    )
    for name in scores:
        for key in ("pointing", "mass", "jaccard", "count"):
            assert scores[name][key] == pytest.approx(expected[name][key], abs=1e-5)
    assert scores["att3"]["count"] == 6.0

    # The command line: another folder scored against its masks (all of it: fraction 1).
    flat = make_folder(tmp_path / "flat", split_folders=False)
    out = tmp_path / "analysis"
    argv = [
        "ltpa-analyze",
        f"--workdir={workdir}",
        f"--image_folder={flat / 'images'}",
        f"--image_folder_masks={flat / 'masks'}",
        "--image_folder_test_fraction=1",
        "--batch_size=8",
        f"--out={out}",
    ]
    try:
        flags.FLAGS(argv)
        analyze.main(["ltpa-analyze", "localization"])
    finally:
        flags.FLAGS.unparse_flags()
    with open(out / "localization_images_test_step2.csv") as f:
        rows = {row["map"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"att1", "att2", "att3", "combined"}
    assert all(0.0 <= float(row["jaccard"]) <= 1.0 for row in rows.values())
    assert (out / "statistics_images_test_step2.csv").exists()
    assert (out / "attention_images_test_step2.png").exists()

    analyze.probe(run, probe_train_images=-1, batch_size=8, out=str(out))  # The run's folder.
    with open(out / "probe_images_step2.csv") as f:
        assert {row["descriptor"] for row in csv.DictReader(f)} >= {"global", "att3"}
    features = np.load(out / "features_images_train_step2.npz")
    assert features["labels"].shape == (12,)


def test_a_run_whose_folder_moved_still_reads_image_files(workdir, folder, tmp_path):
    """Without the folder, ltpa-attend --images still works: classes named by index."""
    config = rundir.RunDir.at(workdir).read_config()
    config.image_folder = str(tmp_path / "gone")
    with pytest.raises(validation.ConfigError, match="is not a folder"):
        validation.check_config(config)
    pipeline = data.Pipeline.from_config(config, require_data=False)
    assert pipeline.class_names == ["0", "1", "2"]
    image = pipeline.load_image_file(str(folder / "images" / "test" / "cat" / "test_0.png"))
    assert image.shape == (SIZE, SIZE, 3)
    with pytest.raises(data.DatasetNotFoundError, match="is not a folder"):
        pipeline.split_size("test")
