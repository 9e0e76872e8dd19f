"""Input pipeline: host-local, exactly resumable batches from TFDS or the cluttered digits.

Datasets live in a small registry (`DATASETS`). Every dataset goes through the same tf.data
path: each host reads its own contiguous slice of a split, caches it after the deterministic
part of the preprocessing, and then, for training, builds one pipeline per epoch:

    epoch e = step // steps_per_epoch
    shuffle(seed derived from (seed, e)) -> augment(stateless, keyed by (seed, e, example index))
    -> batch(drop_remainder) -> take(steps_per_epoch)

so the batches depend only on (config, step): a stream started at `start_step` yields exactly
what the stream started at 0 yields from that step on. Evaluation is one pass in file order,
the last batch padded to full size and flagged by a boolean `mask`.

Host slices follow `tfds.even_splits` (the first `N % process_count` hosts get one example
more) and are read as `split[start:end]`. The training slice is cached in memory after the
deterministic preprocessing: ~150 MB for CIFAR's 50,000 images, ~1.2 GB for CUB at 224 px
(images kept at round(224 * 8/7) = 256 px).

Nothing here downloads: `check_dataset` fails at once, with the command that prepares the
data, when a TFDS dataset is not in `config.data_dir`. Inside `tfds.testing.mock_data` the
check is skipped (mocked builders serve random data and are never "prepared").

Example:
    >>> config = configs.default.get_config()
    >>> check_dataset(config)
    >>> batches = train_batches(config, start_step=0)
    >>> next(batches)["image"].shape  # [batch_size // process_count, 32, 32, 3]
"""

import functools
import math
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ltpa_jax.data import cluttered_digits
from ltpa_jax.data.registry import DATASETS, DatasetInfo, get_dataset_info  # noqa: F401

Batch = dict[str, np.ndarray]

CLUTTERED_DIGITS_SEED = 0  # The generated dataset is fixed; `config.seed` orders and augments.
CUB_RESIZE_RATIO = 8 / 7  # CUB training: resize to round(S * 8/7), then random crop S.
CROP_PADDING_MODES = {"constant": "CONSTANT", "reflect": "REFLECT"}  # config -> tf.pad mode.


def _hide_gpus_from_tf() -> None:
    """Keeps TensorFlow off the accelerators (they belong to JAX) and quiet."""
    tf.get_logger().setLevel("ERROR")
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already initialised its devices: too late, and harmless on CPU.
        pass


_hide_gpus_from_tf()


class DatasetNotFoundError(FileNotFoundError):
    """A TFDS dataset is not prepared where the config says it is."""


# ---------------------------------------------------------------------------------------------
# Validation and availability.


def _tfds_is_mocked() -> bool:
    """True inside `tfds.testing.mock_data`, which patches `DatasetBuilder.as_dataset`.

    Mocked builders report `is_prepared() == False` yet serve (random) data without a download,
    so the availability check must let them through.
    """
    as_dataset = tfds.core.DatasetBuilder.as_dataset
    return getattr(as_dataset, "__module__", "").startswith("tensorflow_datasets.testing")


def _data_dir(config: ml_collections.ConfigDict) -> str | None:
    return config.data_dir or None


def prepare_command(config: ml_collections.ConfigDict) -> str:
    """The shell command that prepares `config.dataset` into `config.data_dir` (TFDS only)."""
    info = get_dataset_info(config.dataset)
    data_dir = f", data_dir={config.data_dir!r}" if config.data_dir else ""
    prepare = "download_and_prepare()"
    if info.manual_files:
        manual_dir = config.manual_dir or "/path/to/manual_dir"
        prepare = (
            "download_and_prepare(download_config=tfds.download.DownloadConfig("
            f"manual_dir={manual_dir!r}))"
        )
    return (
        'python -c "import tensorflow_datasets as tfds; '
        f'tfds.builder({info.tfds_name!r}{data_dir}).{prepare}"'
    )


def _not_prepared_message(
    info: DatasetInfo, config: ml_collections.ConfigDict, searched: str
) -> str:
    lines = [
        f"Dataset {info.name!r} (TFDS {info.tfds_name!r}) is not prepared in {searched} "
        f"(config.data_dir={config.data_dir!r}; '' means the TFDS default). Training never "
        "downloads. Prepare it once, on a machine with network access:",
        f"  {prepare_command(config)}",
        "or point --config.data_dir at a directory that already holds it.",
    ]
    if info.manual_files:
        files = " and ".join(info.manual_files)
        lines.append(
            f"TFDS's own download of {info.tfds_name} has failed before (moved host, checksum "
            f"errors). The manual route: put {files} (from the dataset's home page) in a "
            "folder, set --config.manual_dir to it and run the command above with that folder "
            "as manual_dir. Preparing CUB decodes its masks with OpenCV "
            "(pip install opencv-python-headless)."
        )
    return "\n".join(lines)


def _tfds_builder(info: DatasetInfo, config: ml_collections.ConfigDict) -> Any:
    """The TFDS builder of a dataset, prepared from `config.manual_dir` if it holds the files.

    Raises:
        DatasetNotFoundError: the dataset is not prepared and cannot be prepared offline.
    """
    builder = tfds.builder(info.tfds_name, data_dir=_data_dir(config))
    if _tfds_is_mocked() or builder.is_prepared():
        return builder
    if info.manual_files and config.manual_dir:
        missing = [
            name
            for name in info.manual_files
            if not tf.io.gfile.exists(f"{config.manual_dir.rstrip('/')}/{name}")
        ]
        if missing:
            raise DatasetNotFoundError(
                f"config.manual_dir={config.manual_dir!r} lacks {', '.join(missing)}: put "
                f"{' and '.join(info.manual_files)} there to prepare {info.tfds_name} offline.\n"
                + _not_prepared_message(info, config, str(builder.data_dir))
            )
        print(f"Preparing {info.tfds_name} from {config.manual_dir} into {builder.data_dir}...")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=config.manual_dir)
        )
        return builder
    raise DatasetNotFoundError(_not_prepared_message(info, config, str(builder.data_dir)))


def check_dataset(config: ml_collections.ConfigDict) -> None:
    """Validates the data fields of a config and that the data is there, without downloading.

    Raises:
        ValueError: Unknown dataset, `model.num_classes` different from the dataset's classes,
            `image_size` not a positive multiple of 32, or an unknown `crop_padding_mode`.
        DatasetNotFoundError: A TFDS dataset is not prepared in `config.data_dir`; the message
            names the directory searched and the command that prepares it.
    """
    info = get_dataset_info(config.dataset)
    _check_image_size(config.image_size)
    if config.crop_padding_mode not in CROP_PADDING_MODES:
        raise ValueError(
            f"config.crop_padding_mode={config.crop_padding_mode!r} is not valid; use one of "
            f"{tuple(CROP_PADDING_MODES)}."
        )
    if config.model.num_classes != info.num_classes:
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but dataset {info.name!r} has "
            f"{info.num_classes} classes; set --config.model.num_classes={info.num_classes}."
        )
    if info.tfds_name is not None:
        _tfds_builder(info, config)


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size <= 0 or image_size % 32:
        raise ValueError(
            f"config.image_size={image_size!r} must be a positive multiple of 32 (the network "
            "halves the resolution five times): e.g. 32 for CIFAR/SVHN, 64 for "
            "cluttered_digits, 224 (or 96 for speed) for CUB."
        )


def _local_batch_size(global_size: int, process_count: int, field: str) -> int:
    if global_size <= 0 or global_size % process_count:
        raise ValueError(
            f"config.{field}={global_size} must be a positive multiple of the number of "
            f"processes ({process_count}) so that every host gets the same number of rows."
        )
    return global_size // process_count


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index={index} must be in [0, process_count={count}).")
    return index, count


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The contiguous slice `[start, end)` of a split that one host reads.

    The rule of `tfds.even_splits(drop_remainder=False)`: the first `num_examples %
    process_count` hosts get one example more. Slices of all hosts tile `[0, num_examples)`.
    """
    base, extra = divmod(num_examples, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + int(process_index < extra)


def _resolve_split(info: DatasetInfo, split: str) -> str:
    names = {"train": info.train_split, "test": info.test_split}
    if split not in names:
        raise ValueError(f"split={split!r} is not supported; use 'train' or 'test'.")
    return names[split]


# ---------------------------------------------------------------------------------------------
# Sizes and names.


def _split_size(info: DatasetInfo, config: ml_collections.ConfigDict, split: str) -> int:
    """Number of examples in a whole split (all hosts together)."""
    if info.tfds_name is None:
        return config.num_digits_train if split == info.train_split else config.num_digits_test
    builder = _tfds_builder(info, config)
    if split in builder.info.splits:
        return builder.info.splits[split].num_examples
    # Under tfds.testing.mock_data split sizes are unknown: count the mock's examples.
    ds = builder.as_dataset(split=split, shuffle_files=False)
    size = int(ds.cardinality())
    return size if size >= 0 else int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def split_size(config: ml_collections.ConfigDict, split: str) -> int:
    """Number of examples in the "train" or "test" split of `config.dataset` (all hosts)."""
    info = get_dataset_info(config.dataset)
    return _split_size(info, config, _resolve_split(info, split))


def num_train_examples(config: ml_collections.ConfigDict) -> int:
    """Number of examples in the whole training split (all hosts together)."""
    info = get_dataset_info(config.dataset)
    return _split_size(info, config, info.train_split)


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
    """Training steps per epoch: whole global batches of the training split (remainder dropped)."""
    return num_train_examples(config) // config.batch_size


def class_names(config: ml_collections.ConfigDict) -> list[str]:
    """Class names for pictures: TFDS's names when known offline, else "0", "1", ..."""
    info = get_dataset_info(config.dataset)
    if info.tfds_name is not None:
        try:
            builder = tfds.builder(info.tfds_name, data_dir=_data_dir(config))
            names = builder.info.features["label"].names
            if len(names) == info.num_classes:
                return [str(name) for name in names]
        except Exception:  # noqa: BLE001 - names are cosmetic; never fail a run for them.
            pass
    return [str(i) for i in range(info.num_classes)]


def denormalize(images: Any, dataset: str) -> np.ndarray:
    """Undoes the normalisation, for pictures.

    Args:
        images: float `[B, H, W, 3]` normalised images (NumPy or JAX).
        dataset: Registry name of the dataset they come from.

    Returns:
        float32 `[B, H, W, 3]` in [0, 1].
    """
    info = get_dataset_info(dataset)
    images = np.asarray(images, np.float32)
    std, mean = np.asarray(info.std, np.float32), np.asarray(info.mean, np.float32)
    return np.clip(images * std + mean, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Reading one host's slice of a split.


@functools.lru_cache(maxsize=4)
def _digits_split(split: str, num_examples: int, image_size: int) -> dict[str, np.ndarray]:
    data = cluttered_digits.make_split(split, num_examples, image_size, CLUTTERED_DIGITS_SEED)
    for array in data.values():
        array.setflags(write=False)
    return data


def _read_host_slice(
    info: DatasetInfo, config: ml_collections.ConfigDict, split: str, start: int, end: int
) -> tf.data.Dataset:
    """Examples `[start, end)` of a split, in file order.

    Returns:
        A dataset of dicts: "image" uint8 `[H, W, 3]`, "label" int32 `[]`, and where the dataset
        has them "box" float32 `[4]` (digits: pixels; CUB: TFDS's normalised bbox) and
        "segmentation" uint8 `[h, w, 1]` (CUB).
    """
    if info.tfds_name is None:
        size = config.num_digits_train if split == info.train_split else config.num_digits_test
        data = _digits_split(split, size, config.image_size)
        keys = ("image", "label", "box")
        return tf.data.Dataset.from_tensor_slices({k: data[k][start:end] for k in keys})

    builder = _tfds_builder(info, config)
    ds = builder.as_dataset(
        split=f"{split}[{start}:{end}]",
        shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id=False),
    )
    # A mocked builder ignores the slice and yields all its examples: keep the slice's length.
    ds = ds.take(end - start)

    def select(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = {"image": example["image"], "label": tf.cast(example["label"], tf.int32)}
        if info.has_box:
            out["box"] = tf.cast(example["bbox"], tf.float32)
        if info.has_segmentation:
            out["segmentation"] = example["segmentation_mask"]
        return out

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


# ---------------------------------------------------------------------------------------------
# Per-example transforms (inside tf.data).


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear, antialiased resize of `[H, W, C]` to float32 `[size, size, C]`."""
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), antialias=True)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _normalize(image: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
    """`[..., 3]` pixels in [0, 255] -> float32 standardised with the dataset's mean and std."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(info.mean)) / tf.constant(info.std)


def _fixed_size(image: tf.Tensor, info: DatasetInfo, image_size: int) -> tf.Tensor:
    """Resizes to `image_size` unless the images are stored (or generated) at that size."""
    if info.tfds_name is None or info.native_size == image_size:
        return image
    return _to_uint8(_resize(image, image_size))


def _train_prepare(
    example: dict[str, tf.Tensor], info: DatasetInfo, config: ml_collections.ConfigDict
) -> dict[str, tf.Tensor]:
    """The deterministic part of training preprocessing (cached): a uint8 image of fixed size."""
    image = example["image"]
    if info.augmentation == "resize_crop":
        size = round(config.image_size * CUB_RESIZE_RATIO) if config.augment else config.image_size
        image = _to_uint8(_resize(image, size))
    else:
        image = _fixed_size(image, info, config.image_size)
    return {"image": image, "label": example["label"], "index": example["index"]}


def _train_augment(
    example: dict[str, tf.Tensor],
    info: DatasetInfo,
    config: ml_collections.ConfigDict,
    epoch: int,
) -> dict[str, tf.Tensor]:
    """The random part of training preprocessing, keyed by (seed, epoch, example index)."""
    image = example["image"]
    size = config.image_size
    if config.augment and info.augmentation != "none":
        key = tf.random.experimental.stateless_fold_in(
            tf.constant([config.seed, epoch], tf.int64), example["index"]
        )
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        if info.augmentation == "pad_crop":
            pad = config.crop_padding
            mode = CROP_PADDING_MODES[config.crop_padding_mode]
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode)
        image = tf.image.stateless_random_crop(image, (size, size, 3), seed=crop_key)
        if info.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
    image = tf.ensure_shape(image, (size, size, 3))
    return {"image": _normalize(image, info), "label": example["label"]}


def _eval_transform(
    example: dict[str, tf.Tensor], info: DatasetInfo, config: ml_collections.ConfigDict
) -> dict[str, tf.Tensor]:
    """Evaluation preprocessing, no randomness; CUB is resized straight to S (boxes stay valid)."""
    size = config.image_size
    if info.augmentation == "resize_crop":
        image = _resize(example["image"], size)
    else:
        image = _fixed_size(example["image"], info, size)
    out = {
        "image": _normalize(tf.ensure_shape(image, (size, size, 3)), info),
        "label": example["label"],
    }
    if info.has_box:
        # TFDS boxes are normalised (ymin, xmin, ymax, xmax); generated boxes are in pixels.
        box = example["box"]
        out["box"] = box * float(size) if info.tfds_name is not None else box
    if info.has_segmentation:
        mask = _resize(example["segmentation"], size)[..., 0] / 255.0
        out["segmentation"] = tf.clip_by_value(mask, 0.0, 1.0)
    return out


IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_image_file(path: str, config: ml_collections.ConfigDict) -> np.ndarray:
    """Reads an ordinary image file (any size) as the model's input, like the eval transform.

    The image is converted to RGB, resized straight to `config.image_size` (bilinear,
    antialiased, as CUB's evaluation images are; pixels rounded like the resized TFDS images)
    and normalised with `config.dataset`'s mean and std.

    Returns:
        float32 `[S, S, 3]`.

    Raises:
        ValueError: the file cannot be decoded as an image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError  # Local: only the analysis tools need it.

    info = get_dataset_info(config.dataset)
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot be decoded as an image ({error}).") from error
    size = config.image_size
    if pixels.shape[:2] != (size, size):
        resized = _resize(tf.constant(pixels), size)
        if info.augmentation != "resize_crop":
            resized = _to_uint8(resized)
        pixels = resized.numpy()
    return _normalize(tf.constant(pixels), info).numpy()


# ---------------------------------------------------------------------------------------------
# Public streams.


def _epoch_shuffle_seed(seed: int, epoch: int) -> int:
    """A 63-bit tf.data shuffle seed derived from (seed, epoch)."""
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def train_batches(
    config: ml_collections.ConfigDict,
    *,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """An infinite stream of host-local training batches, exactly resumable at any step.

    Epoch `e` (steps `[e * steps_per_epoch, (e + 1) * steps_per_epoch)`) shuffles this host's
    slice with a seed derived from `(config.seed, e)` and augments each example with stateless
    ops keyed by `(config.seed, e, example index)`, so a batch depends only on the config, the
    step and the host. Note: a global TF seed (`tf.random.set_seed`) also enters tf.data's
    shuffle; set it the same way (or not at all) in runs that resume each other.

    Args:
        config: The experiment config (see configs/default.py).
        start_step: Global step of the first batch yielded (0 for a fresh run).
        process_index: This host's index; defaults to `jax.process_index()`.
        process_count: Number of hosts; defaults to `jax.process_count()`.

    Returns:
        An iterator of dicts with "image" float32 `[b, S, S, 3]` (normalised) and "label" int32
        `[b]`, where `b = config.batch_size // process_count`.

    Raises:
        ValueError, DatasetNotFoundError: As `check_dataset`; also for a batch size that does
            not split over the hosts or exceeds the training split, or a negative start_step.
    """
    check_dataset(config)
    info = get_dataset_info(config.dataset)
    index, count = _processes(process_index, process_count)
    local_batch = _local_batch_size(config.batch_size, count, "batch_size")
    total = num_train_examples(config)
    steps = total // config.batch_size
    if steps < 1:
        raise ValueError(
            f"config.batch_size={config.batch_size} is larger than the training split of "
            f"{info.name!r} ({total} examples); lower it."
        )
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    start, end = host_range(total, index, count)

    base = _read_host_slice(info, config, info.train_split, start, end).enumerate(start)
    base = base.map(
        lambda i, example: _train_prepare({**example, "index": i}, info, config),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    base = base.cache().with_options(_options())
    # Fill the cache with one full pass now: an epoch stops after `steps` batches, and a cache
    # that is not read to its end is thrown away.
    cached = int(base.reduce(np.int64(0), lambda n, _: n + 1))
    if cached != end - start:
        raise RuntimeError(f"Read {cached} training examples on this host, expected {end - start}.")
    buffer_size = max(1, min(config.shuffle_buffer, end - start))

    def epoch_dataset(epoch: int, skip_batches: int) -> tf.data.Dataset:
        seed = _epoch_shuffle_seed(config.seed, epoch)
        ds = base.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)
        # Every host stops after `steps` batches, whatever the size of its slice.
        ds = ds.take(steps * local_batch).skip(skip_batches * local_batch)
        ds = ds.map(
            lambda example: _train_augment(example, info, config, epoch),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = ds.batch(local_batch, drop_remainder=True)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())

    def stream(epoch: int, skip_batches: int) -> Iterator[Batch]:
        while True:
            yield from epoch_dataset(epoch, skip_batches).as_numpy_iterator()
            epoch, skip_batches = epoch + 1, 0

    return stream(*divmod(start_step, steps))


def eval_batches(
    config: ml_collections.ConfigDict,
    split: str = "test",
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """One pass over a split in file order, in host-local batches padded to full size.

    Every host yields the same number of batches, `ceil(ceil(N / process_count) / b)`; rows
    past the end of a host's slice are zeros with `mask` False.

    Args:
        config: The experiment config.
        split: "test" or "train".
        process_index: This host's index; defaults to `jax.process_index()`.
        process_count: Number of hosts; defaults to `jax.process_count()`.

    Returns:
        An iterator of dicts with "image" float32 `[b, S, S, 3]`, "label" int32 `[b]`, "mask"
        bool `[b]` (True for real rows), plus for cluttered_digits and CUB "box" float32
        `[b, 4]` (ymin, xmin, ymax, xmax in input pixels) and for CUB "segmentation" float32
        `[b, S, S]` in [0, 1]; `b = config.eval_batch_size // process_count`.
    """
    check_dataset(config)
    info = get_dataset_info(config.dataset)
    split = _resolve_split(info, split)
    index, count = _processes(process_index, process_count)
    local_batch = _local_batch_size(config.eval_batch_size, count, "eval_batch_size")
    total = _split_size(info, config, split)
    start, end = host_range(total, index, count)
    num_batches = math.ceil(math.ceil(total / count) / local_batch)

    ds = _read_host_slice(info, config, split, start, end)
    ds = ds.map(lambda example: _eval_transform(example, info, config), tf.data.AUTOTUNE)
    ds = ds.batch(local_batch).prefetch(tf.data.AUTOTUNE).with_options(_options())
    template = {
        key: np.zeros((local_batch, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
        for key, spec in ds.element_spec.items()
    }

    def stream() -> Iterator[Batch]:
        produced = 0
        for batch in ds.as_numpy_iterator():
            yield _pad_batch(batch, template)
            produced += 1
        for _ in range(num_batches - produced):
            yield _pad_batch({key: value[:0] for key, value in template.items()}, template)

    return stream()


def first_examples(batches: Iterator[Batch], num_examples: int) -> Iterator[Batch]:
    """The padded batches of `eval_batches` up to `num_examples` real rows (all when <= 0).

    Rows past the limit get `mask` False; the stream stops once the limit is reached. For one
    host's analysis (the hosts of a multi-host run would stop at different batches).
    """
    seen = 0
    for batch in batches:
        if num_examples > 0:
            if seen >= num_examples:
                return
            batch["mask"] = batch["mask"] & (np.cumsum(batch["mask"]) <= num_examples - seen)
        seen += int(batch["mask"].sum())
        yield batch


def _pad_batch(batch: Batch, template: Batch) -> Batch:
    """Pads every leaf of a (partial) batch to the template's rows and adds `mask` `[b]`."""
    rows = len(batch["label"])
    out = {}
    for key, value in template.items():
        padded = value.copy()
        padded[:rows] = batch[key]
        out[key] = padded
    out["mask"] = np.arange(len(template["label"])) < rows
    return out


def shard_batch(batch: Batch, sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
    """Builds global arrays from every host's rows.

    Args:
        batch: Host-local arrays, each with the batch as its leading axis `[b, ...]`.
        sharding: Usually `NamedSharding(mesh, P("data"))`.

    Returns:
        Global `jax.Array`s `[b * process_count, ...]` laid out by `sharding`.
    """
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )
