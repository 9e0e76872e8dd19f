"""Tests of `ltpa_jax.data`: the registry, the pipeline object and its streams, availability and
preparation. Mock TFDS data for the TFDS datasets, tiny generated digits."""

import contextlib
import re
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from unittest import mock

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltpa_jax import data, validation
from ltpa_jax.configs import default
from ltpa_jax.data import cluttered_digits, transforms
from ltpa_jax.data import pipeline as pipeline_lib

MOCK_EXAMPLES = 20  # Every mocked TFDS split has this many examples.
DIGITS_TRAIN, DIGITS_TEST = 20, 14
BATCH = 8  # 20 examples -> 2 steps per epoch (4 left over), so epochs are short.
EVAL_BATCH = 6


def make_config(dataset: str, **overrides) -> ml_collections.ConfigDict:
    """The default config, shrunk to a tiny, fast data setting for `dataset`."""
    config = default.get_config()
    config.dataset = dataset
    config.model.num_classes = data.get_dataset_info(dataset).num_classes
    sizes = {"cluttered_digits": 64, "caltech_birds2011": 64, "caltech101": 64, "stl10": 96}
    config.image_size = sizes.get(dataset, 32)
    config.batch_size = BATCH
    config.eval_batch_size = EVAL_BATCH
    config.num_digits_train = DIGITS_TRAIN
    config.num_digits_test = DIGITS_TEST
    config.shuffle_buffer = 1000
    config.update(overrides)
    return config


def data_source(dataset: str) -> contextlib.AbstractContextManager:
    """Mock TFDS data for the TFDS datasets; nothing for the generated digits."""
    if data.get_dataset_info(dataset).tfds_name is None:
        return contextlib.nullcontext()
    return tfds.testing.mock_data(
        num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
    )


def pipe(config: ml_collections.ConfigDict) -> data.Pipeline:
    return data.Pipeline.from_config(config)


def take(stream: Iterator[dict[str, np.ndarray]], n: int) -> list[dict[str, np.ndarray]]:
    return list(islice(stream, n))


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# The image folder is tested on a generated folder in test_image_folder.py.
NAMED_DATASETS = sorted(n for n, i in data.DATASETS.items() if i.source != "image_folder")


@pytest.fixture(params=NAMED_DATASETS)
def config(request) -> Iterator[ml_collections.ConfigDict]:
    with data_source(request.param):
        yield make_config(request.param)


# ---------------------------------------------------------------------------------------------
# Registry and config checks.


def test_registry_classes_and_flips():
    classes = {n: i.num_classes for n, i in data.DATASETS.items()}
    assert classes == {
        "cifar100": 100,
        "cifar10": 10,
        "svhn_cropped": 10,
        "caltech_birds2011": 200,
        "cluttered_digits": 10,
        "cluttered_digits_shifted": 10,
        "stl10": 10,
        "caltech101": 102,
        "image_folder": 0,  # The folder decides (data.dataset_info).
    }
    flips = {n for n, i in data.DATASETS.items() if i.flip}
    assert flips == {"cifar100", "cifar10", "caltech_birds2011", "stl10", "caltech101"} | {
        "image_folder"
    }
    sources = {n: i.source for n, i in data.DATASETS.items() if i.source != "tfds"}
    assert sources == {
        "cluttered_digits": "generated",
        "cluttered_digits_shifted": "generated",
        "image_folder": "image_folder",
    }


def test_unknown_dataset_raises_listing_valid_names():
    with pytest.raises(ValueError, match="mnist") as error:
        data.get_dataset_info("mnist")
    for name in data.DATASETS:
        assert name in str(error.value)
    config = make_config("cluttered_digits")
    config.dataset = "mnist"
    with pytest.raises(ValueError, match="config.dataset='mnist'"):
        data.Pipeline.from_config(config)
    with pytest.raises(ValueError, match="config.dataset='mnist'"):
        validation.check_config(config)


# The rules about a config live in `validation.check_config`; the pipeline trusts a checked
# config. (8 forced CPU devices: batch sizes that split over them.)


def test_wrong_num_classes_raises():
    config = make_config("cluttered_digits", eval_batch_size=8)
    config.model.num_classes = 100
    with pytest.raises(ValueError, match=r"num_classes=100.*num_classes=10"):
        validation.check_config(config)


@pytest.mark.parametrize("image_size", [0, 48, -32])
def test_image_size_must_be_positive_multiple_of_32(image_size):
    with pytest.raises(ValueError, match=f"image_size={image_size}"):
        validation.check_config(
            make_config("cluttered_digits", image_size=image_size, eval_batch_size=8)
        )


def test_batch_size_must_split_over_hosts():
    with pytest.raises(ValueError, match="config.batch_size=8"):
        pipe(make_config("cluttered_digits")).train_batches(process_count=3)


@pytest.mark.parametrize("dataset", ["cifar10", "caltech_birds2011"])
def test_unprepared_tfds_dataset_fails_fast_with_the_fix(dataset, tmp_path):
    config = make_config(dataset, data_dir=str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.Pipeline.from_config(config)
    # Made without the data (for class names, image files), its streams fail the same way.
    without_data = data.Pipeline.from_config(config, require_data=False)
    with pytest.raises(FileNotFoundError):
        without_data.train_batches()
    with pytest.raises(data.DatasetNotFoundError, match="is not prepared"):
        without_data.eval_batches()
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert str(tmp_path) in message
    assert f"tfds.builder({dataset!r}, data_dir={str(tmp_path)!r}).download_and_prepare(" in (
        message
    )
    if dataset == "caltech_birds2011":
        assert "CUB_200_2011.tgz" in message and "segmentations.tgz" in message
        assert "manual_dir" in message


def test_cub_manual_dir_without_its_files_names_the_missing_ones(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "CUB_200_2011.tgz").write_bytes(b"")
    config = make_config(
        "caltech_birds2011", data_dir=str(tmp_path / "data"), manual_dir=str(manual)
    )
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError, match=r"lacks segmentations\.tgz"):
        data.Pipeline.from_config(config)
    with pytest.raises(data.DatasetNotFoundError, match=r"lacks segmentations\.tgz"):
        data.prepare_dataset(config)
    assert time.perf_counter() - start < 10


def test_cluttered_digits_are_always_available():
    data.Pipeline.from_config(make_config("cluttered_digits", data_dir="/nonexistent"))


def test_sizes_drop_the_remainder():
    pipeline = pipe(make_config("cluttered_digits"))
    assert pipeline.num_train_examples == DIGITS_TRAIN
    assert pipeline.steps_per_epoch == DIGITS_TRAIN // BATCH
    assert pipeline.split_size("train") == DIGITS_TRAIN
    assert pipeline.split_size("test") == DIGITS_TEST
    assert pipeline.image_size == 64


def test_host_ranges_tile_the_split():
    for total, count in [(20, 1), (20, 2), (11, 3), (2, 4)]:
        ranges = [data.host_range(total, i, count) for i in range(count)]
        assert ranges[0][0] == 0 and ranges[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        sizes = [end - start for start, end in ranges]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_class_names():
    assert pipe(make_config("cluttered_digits")).class_names == list("0123456789")
    unprepared = make_config("cifar100", data_dir="/nonexistent")
    names = data.Pipeline.from_config(unprepared, require_data=False).class_names
    assert len(names) == 100 and all(isinstance(n, str) for n in names)


@pytest.mark.parametrize("dataset", ["stl10", "caltech101"])
def test_cross_domain_tfds_datasets_by_name(dataset):
    """STL-10 and Caltech-101 (the paper's cross-domain datasets) validate and stream."""
    with data_source(dataset):
        config = make_config(dataset, batch_size=8, eval_batch_size=8)
        validation.check_config(config)
        pipeline = pipe(config)
        # Under mock data TFDS serves 20 random examples per split; eval of "train" feeds probes.
        assert pipeline.split_size("train") == pipeline.split_size("test") == MOCK_EXAMPLES
        batch = next(pipeline.eval_batches("train"))
        assert batch["image"].shape == (8, config.image_size, config.image_size, 3)
        if dataset == "stl10":  # Stored at 96x96: the device path can hold it at that size.
            assert pipeline.supports_device_input and pipeline.image_size == 96
            assert not pipe(make_config(dataset, image_size=32)).supports_device_input
        else:  # Variable sizes: resize-crop, TFDS's 102 class names.
            assert not pipeline.supports_device_input
            names = pipeline.class_names
            assert len(names) == 102 and names[:2] == ["accordion", "airplanes"]
        config.model.num_classes = 100
        with pytest.raises(
            validation.ConfigError, match=f"has {data.DATASETS[dataset].num_classes}"
        ):
            validation.check_config(config)


# ---------------------------------------------------------------------------------------------
# Training stream.


def test_train_batches_shapes_dtypes_and_ranges(config):
    size = config.image_size
    for batch in take(pipe(config).train_batches(), 3):
        assert set(batch) == {"image", "label"}
        assert batch["image"].shape == (BATCH, size, size, 3)
        assert batch["image"].dtype == np.float32
        assert batch["label"].shape == (BATCH,)
        assert batch["label"].dtype == np.int32
        assert np.all(batch["label"] >= 0)
        assert np.all(batch["label"] < config.model.num_classes)
        assert np.isfinite(batch["image"]).all()
        assert abs(batch["image"].mean()) < 1.0  # Roughly centred ...
        assert 0.3 < batch["image"].std() < 3.0  # ... and scaled.


def test_exact_resume_across_an_epoch_boundary(config):
    reference = take(pipe(config).train_batches(), 7)  # 3.5 epochs of 2 steps.
    for start_step in (3, 4):  # Mid-epoch after a boundary, and exactly on one.
        resumed = take(pipe(config).train_batches(start_step), 7 - start_step)
        assert_same_batches(resumed, reference[start_step:])


@pytest.mark.parametrize("dataset", ["cluttered_digits", "cifar10"])
def test_same_seed_same_stream_other_seed_differs(dataset):
    with data_source(dataset):
        first = take(pipe(make_config(dataset, seed=7)).train_batches(), 3)
        second = take(pipe(make_config(dataset, seed=7)).train_batches(), 3)
        other = take(pipe(make_config(dataset, seed=8)).train_batches(), 3)
    assert_same_batches(first, second)
    pairs = zip(first, other, strict=True)
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in pairs)


def test_epochs_are_permutations_and_differ():
    # Digits have no augmentation, so an epoch's rows are distinct training images.
    config = make_config("cluttered_digits", batch_size=10)
    epochs = take(pipe(config).train_batches(), 4)
    rows = [np.concatenate([b["image"] for b in epochs[i : i + 2]]) for i in (0, 2)]
    for images in rows:
        assert len({image.tobytes() for image in images}) == DIGITS_TRAIN
    assert not np.array_equal(rows[0], rows[1])  # Reshuffled.
    assert {i.tobytes() for i in rows[0]} == {i.tobytes() for i in rows[1]}


def test_augmentation_changes_images_and_can_be_disabled():
    with data_source("cifar10"):
        on = take(pipe(make_config("cifar10")).train_batches(), 2)
        off = take(pipe(make_config("cifar10", augment=False)).train_batches(), 2)
    # Same shuffle, so the same examples in the same order; only the pixels move.
    for a, b in zip(on, off, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(on, off, strict=True))


def test_hosts_read_disjoint_examples_cluttered_digits():
    pipeline = pipe(make_config("cluttered_digits"))
    hosts = [take(pipeline.train_batches(process_index=i, process_count=2), 2) for i in range(2)]
    seen = []
    for batches in hosts:
        assert all(b["image"].shape[0] == BATCH // 2 for b in batches)
        seen.append({image.tobytes() for b in batches for image in b["image"]})
    assert len(seen[0]) == len(seen[1]) == BATCH  # One epoch: distinct rows on each host.
    assert not seen[0] & seen[1]


def _indexed_as_dataset(self, split, **kwargs) -> tf.data.Dataset:
    """Mock reader that honours `split[start:end]`: every pixel of example i is i."""
    del self, kwargs
    match = re.fullmatch(r"\w+(?:\[(\d+):(\d+)\])?", split)
    start, end = (int(match[1]), int(match[2])) if match[1] else (0, MOCK_EXAMPLES)
    return tf.data.Dataset.range(start, end).map(
        lambda i: {
            "id": tf.strings.as_string(i),
            "image": tf.fill([32, 32, 3], tf.cast(i, tf.uint8)),
            "label": i % 10,
        }
    )


def _example_ids(images: np.ndarray) -> list[int]:
    pixels = transforms.denormalize(images, data.get_dataset_info("cifar10"))[:, 16, 16, 0]
    return [int(v) for v in np.rint(pixels * 255)]


def test_hosts_split_global_batches_and_read_disjoint_eval_slices():
    config = make_config("cifar10", augment=False)
    with tfds.testing.mock_data(as_dataset_fn=_indexed_as_dataset):
        pipeline = pipe(config)
        train = [
            take(pipeline.train_batches(process_index=i, process_count=2), 2) for i in range(2)
        ]
        whole = take(pipeline.train_batches(process_index=0, process_count=1), 2)
        evals = [list(pipeline.eval_batches(process_index=i, process_count=2)) for i in range(2)]
    # CIFAR's training order is one permutation of the whole split (data.augment, shared with
    # the device path): each host yields its half of every global batch.
    for step in range(2):
        halves = [_example_ids(train[host][step]["image"]) for host in range(2)]
        assert halves[0] + halves[1] == _example_ids(whole[step]["image"])
    train_ids = [{i for b in batches for i in _example_ids(b["image"])} for batches in train]
    assert not train_ids[0] & train_ids[1]
    assert len(train_ids[0]) == len(train_ids[1]) == BATCH
    eval_ids = [
        [i for b in batches for i in _example_ids(b["image"][b["mask"]])] for batches in evals
    ]
    assert eval_ids == [list(range(10)), list(range(10, 20))]


# ---------------------------------------------------------------------------------------------
# Evaluation stream.


def test_eval_batches_are_padded_and_masked(config):
    info = data.get_dataset_info(config.dataset)
    size = config.image_size
    batches = list(pipe(config).eval_batches())
    total = DIGITS_TEST if info.tfds_name is None else MOCK_EXAMPLES
    assert len(batches) == -(-total // EVAL_BATCH)
    expected = {"image", "label", "mask"}
    expected |= {"box"} if info.has_box else set()
    expected |= {"segmentation"} if info.has_segmentation else set()
    for batch in batches:
        assert set(batch) == expected
        assert batch["image"].shape == (EVAL_BATCH, size, size, 3)
        assert batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32
        assert batch["mask"].dtype == np.bool_ and batch["mask"].shape == (EVAL_BATCH,)
        assert not batch["image"][~batch["mask"]].any()  # Padding rows are zeros.
        if info.has_box:
            assert batch["box"].shape == (EVAL_BATCH, 4) and batch["box"].dtype == np.float32
            assert np.all((batch["box"] >= 0) & (batch["box"] <= size))
        if info.has_segmentation:
            seg = batch["segmentation"]
            assert seg.shape == (EVAL_BATCH, size, size) and seg.dtype == np.float32
            assert seg.min() >= 0 and seg.max() <= 1
    assert sum(int(b["mask"].sum()) for b in batches) == total
    assert batches[0]["mask"].all()


def test_eval_is_the_split_in_order_and_matches_the_generator():
    config = make_config("cluttered_digits")
    pipeline = pipe(config)
    batches = list(pipeline.eval_batches())
    split = cluttered_digits.make_split("test", DIGITS_TEST, 64, pipeline_lib.CLUTTERED_DIGITS_SEED)
    images = np.concatenate([b["image"][b["mask"]] for b in batches])
    pixels = pipeline.denormalize(images) * 255
    np.testing.assert_allclose(pixels, split["image"], atol=0.51)
    np.testing.assert_array_equal(
        np.concatenate([b["label"][b["mask"]] for b in batches]), split["label"]
    )
    np.testing.assert_array_equal(
        np.concatenate([b["box"][b["mask"]] for b in batches]), split["box"]
    )


def test_eval_hosts_yield_equal_batch_counts_and_cover_the_split():
    config = make_config("cluttered_digits", num_digits_test=13, eval_batch_size=4)
    pipeline = pipe(config)
    single = list(pipeline.eval_batches(process_index=0, process_count=1))
    hosts = [list(pipeline.eval_batches(process_index=i, process_count=2)) for i in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == 4  # Slices of 7 and 6 rows, 2 rows per batch.
    assert [int(sum(b["mask"].sum() for b in h)) for h in hosts] == [7, 6]
    labels = [np.concatenate([b["label"][b["mask"]] for b in h]) for h in hosts]
    expected = np.concatenate([b["label"][b["mask"]] for b in single])
    np.testing.assert_array_equal(np.concatenate(labels), expected)


def test_denormalize_maps_to_unit_interval():
    config = make_config("cluttered_digits")
    pipeline = pipe(config)
    image = next(pipeline.eval_batches())["image"]
    out = pipeline.denormalize(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and out.max() > 0.5


# ---------------------------------------------------------------------------------------------
# A real (not mocked) TFDS dataset: CIFAR-10 prepared offline from a few fake binary records.

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR10_NAMES += ["dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def prepared_cifar10(tmp_path_factory) -> str:
    """A TFDS data_dir holding cifar10 with 20 train (ids 0-19) and 7 test (ids 100-106) images.

    Every pixel of example `id` equals `id`; its label is `id % 10`.
    """
    # TFDS 4.9.10 imports importlib_resources to prepare any dataset; etils >= 1.13 no longer
    # pulls it in, so without it `download_and_prepare` fails (ModuleNotFoundError).
    pytest.importorskip("importlib_resources", reason="TFDS needs it to prepare datasets")
    root = tmp_path_factory.mktemp("cifar10")
    source = root / "extracted" / "cifar-10-batches-bin"
    source.mkdir(parents=True)

    def write(name: str, ids: range) -> None:
        records = [bytes([i % 10]) + bytes([i]) * 3072 for i in ids]
        (source / name).write_bytes(b"".join(records))

    for k in range(5):
        write(f"data_batch_{k + 1}.bin", range(4 * k, 4 * k + 4))
    write("test_batch.bin", range(100, 107))
    (source / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n")
    data_dir = str(root / "tfds")
    extracted = str(root / "extracted")
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", lambda self, url: extracted
    ):
        tfds.builder("cifar10", data_dir=data_dir).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return data_dir


def test_prepared_tfds_dataset_sizes_and_names(prepared_cifar10):
    config = make_config("cifar10", data_dir=prepared_cifar10)
    pipeline = data.Pipeline.from_config(config)
    assert pipeline.num_train_examples == 20
    assert pipeline.steps_per_epoch == 20 // BATCH
    assert pipeline.class_names == CIFAR10_NAMES
    assert pipeline.split_size("test") == 7


def test_prepared_tfds_dataset_hosts_resume_and_eval(prepared_cifar10):
    pipeline = pipe(make_config("cifar10", data_dir=prepared_cifar10, augment=False))
    hosts = [take(pipeline.train_batches(process_index=i, process_count=2), 5) for i in range(2)]
    epoch_ids = [{i for b in batches[:2] for i in _example_ids(b["image"])} for batches in hosts]
    assert len(epoch_ids[0]) == len(epoch_ids[1]) == BATCH  # Distinct rows in an epoch ...
    assert not epoch_ids[0] & epoch_ids[1]  # ... and different examples on the two hosts.
    for batches in hosts:
        for batch in batches:
            np.testing.assert_array_equal(
                batch["label"], np.array(_example_ids(batch["image"])) % 10
            )
    resumed = take(pipeline.train_batches(3, process_index=1, process_count=2), 2)
    assert_same_batches(resumed, hosts[1][3:5])
    evals = [list(pipeline.eval_batches(process_index=i, process_count=2)) for i in range(2)]
    assert len(evals[0]) == len(evals[1]) == 2  # Slices of 4 and 3 rows, 3 rows per batch.
    eval_ids = [{i for b in h for i in _example_ids(b["image"][b["mask"]])} for h in evals]
    assert not eval_ids[0] & eval_ids[1]
    assert eval_ids[0] | eval_ids[1] == set(range(100, 107))


# ---------------------------------------------------------------------------------------------
# Global arrays.


def test_shard_batch_on_8_cpu_devices():
    # tests/conftest.py forces 8 CPU devices for every test.
    assert jax.device_count() == 8, jax.devices()
    sharding = NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
    batch = {
        "image": np.arange(16 * 4 * 4 * 3, dtype=np.float32).reshape(16, 4, 4, 3),
        "label": np.arange(16, dtype=np.int32),
        "mask": np.ones(16, bool),
    }
    out = data.shard_batch(batch, sharding)
    for key, value in out.items():
        assert isinstance(value, jax.Array), key
        assert value.shape == batch[key].shape, key
        assert value.sharding == sharding, key
        assert len(value.addressable_shards) == 8, key
        assert {s.data.shape[0] for s in value.addressable_shards} == {2}, key
        np.testing.assert_array_equal(np.asarray(value), batch[key])


def test_first_examples_masks_past_the_limit_and_stops():
    batches = [{"mask": np.array([True, True, True])} for _ in range(4)]
    out = list(pipeline_lib.first_examples(iter(batches), 4))
    assert [b["mask"].tolist() for b in out] == [[True, True, True], [True, False, False]]
    every = list(pipeline_lib.first_examples(iter([{"mask": np.ones(3, bool)}] * 2), 0))
    assert sum(int(b["mask"].sum()) for b in every) == 6


def test_eval_batches_stop_after_num_examples():
    pipeline = pipe(make_config("cluttered_digits"))  # 14 test images in batches of 6.
    every = list(pipeline.eval_batches())
    first = list(pipeline.eval_batches(num_examples=8))
    assert [int(b["mask"].sum()) for b in first] == [6, 2]
    assert first[1]["mask"].tolist() == [True, True, False, False, False, False]
    for a, b in zip(first, every, strict=False):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert_same_batches(list(pipeline.eval_batches(num_examples=0)), every)


# ---------------------------------------------------------------------------------------------
# Made once: the builder, the config, no preparation.


def test_pipeline_builds_the_tfds_builder_once(prepared_cifar10, monkeypatch):
    calls = []
    builder = tfds.builder

    def counting_builder(*args, **kwargs):
        calls.append(args)
        return builder(*args, **kwargs)

    monkeypatch.setattr(tfds, "builder", counting_builder)
    pipeline = pipe(make_config("cifar10", data_dir=prepared_cifar10))
    assert len(calls) == 1
    take(pipeline.train_batches(), 3)
    take(pipeline.train_batches(2), 1)
    list(pipeline.eval_batches())
    list(pipeline.eval_batches("train", num_examples=5))
    assert pipeline.class_names == CIFAR10_NAMES
    assert pipeline.split_size("test") == 7 and pipeline.steps_per_epoch == 20 // BATCH
    assert len(calls) == 1


def test_pipeline_does_not_reread_the_config():
    config = make_config("cluttered_digits", seed=3)
    pipeline = pipe(config)
    expected_train = take(pipe(make_config("cluttered_digits", seed=3)).train_batches(), 3)
    expected_eval = list(pipe(make_config("cluttered_digits", seed=3)).eval_batches())
    config.seed, config.batch_size, config.eval_batch_size, config.image_size = 4, 4, 2, 96
    assert_same_batches(take(pipeline.train_batches(), 3), expected_train)
    assert_same_batches(list(pipeline.eval_batches()), expected_eval)
    assert pipeline.steps_per_epoch == DIGITS_TRAIN // BATCH and pipeline.image_size == 64


@pytest.fixture
def prepared(monkeypatch) -> list[tuple[str, dict]]:
    """Records `(name, kwargs)` of every `download_and_prepare` call, preparing nothing."""
    calls = []
    monkeypatch.setattr(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        lambda self, **kwargs: calls.append((self.name, kwargs)),
    )
    return calls


def _cub_manual_dir(tmp_path: Path) -> Path:
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in data.get_dataset_info("caltech_birds2011").manual_files:
        (manual / name).write_bytes(b"")
    return manual


def test_from_config_prepares_nothing(tmp_path, prepared):
    manual = _cub_manual_dir(tmp_path)
    config = make_config(
        "caltech_birds2011", data_dir=str(tmp_path / "data"), manual_dir=str(manual)
    )
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.Pipeline.from_config(config)
    data.Pipeline.from_config(config, require_data=False).class_names  # noqa: B018
    assert prepared == []
    assert f"manual_dir={str(manual)!r}" in str(error.value)  # The command uses the folder.
    assert data.prepare_command(config) in str(error.value)


def test_prepare_dataset_prepares_from_the_manual_dir(tmp_path, prepared):
    manual = _cub_manual_dir(tmp_path)
    config = make_config(
        "caltech_birds2011", data_dir=str(tmp_path / "data"), manual_dir=str(manual)
    )
    where = data.prepare_dataset(config)
    assert where == str(tmp_path / "data")
    [(name, kwargs)] = prepared
    assert name == "caltech_birds2011"
    assert kwargs["download_config"].manual_dir == str(manual)


def test_prepare_dataset_leaves_prepared_and_generated_data(prepared_cifar10, prepared):
    assert data.prepare_dataset(make_config("cifar10", data_dir=prepared_cifar10)) == (
        prepared_cifar10
    )
    digits = make_config("cluttered_digits", data_dir="/nonexistent")
    assert data.prepare_dataset(digits) == "/nonexistent"
    assert prepared == []


def test_eval_batch_size_can_be_overridden():
    pipeline = pipe(make_config("cluttered_digits"))  # config.eval_batch_size = 6.
    every = list(pipeline.eval_batches())
    fours = list(pipeline.eval_batches(batch_size=4))
    assert [len(b["label"]) for b in fours] == [4, 4, 4, 4]
    for key in ("image", "label", "box"):
        np.testing.assert_array_equal(
            np.concatenate([b[key][b["mask"]] for b in fours]),
            np.concatenate([b[key][b["mask"]] for b in every]),
        )
    with pytest.raises(ValueError, match=r"^batch_size=3 must be a positive multiple"):
        pipeline.eval_batches(batch_size=3, process_index=0, process_count=2)
