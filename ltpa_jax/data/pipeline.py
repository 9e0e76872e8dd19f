"""The input pipeline: one object, made once from a config, that hands out batch streams.

`Pipeline.from_config(config)` reads the config once (dataset info, TFDS builder, split sizes,
steps per epoch, class names, normalisation) and checks once that the data is there; the loop
then asks the pipeline, never the config again. Every dataset goes through the same tf.data
path: each host reads its own contiguous slice of a split, caches it after the deterministic
part of the preprocessing, and then, for training, builds one pipeline per epoch:

    epoch e = step // steps_per_epoch
    shuffle(seed derived from (seed, e)) -> augment(stateless, keyed by (seed, e, example index))
    -> batch(drop_remainder) -> take(steps_per_epoch)

so the batches depend only on (config, step): a stream started at `start_step` yields exactly
what the stream started at 0 yields from that step on. Datasets stored at the input size with
pad-and-crop augmentation (CIFAR-10/100, SVHN) instead take their order, crops and flips from
`data.augment`, the function of (seed, epoch, example index) that the device-resident path
(`data.device`) draws from too, so both paths give the same batches: every host then holds the
whole training split (`split_arrays`, 150-230 MB) and takes its rows of each global batch.
Evaluation is one pass in file order, padded (clu's `pad_dataset`) to the same number of full
batches on every host, the padding flagged by a boolean `mask`.

Host slices follow `tfds.even_splits` (the first `N % process_count` hosts get one example
more) and are read as `split[start:end]`. The training slice is cached in memory after the
deterministic preprocessing: ~150 MB for CIFAR's 50,000 images, ~1.2 GB for CUB at 224 px
(images kept at round(224 * 8/7) = 256 px).

Example:
    >>> pipeline = Pipeline.from_config(config)  # Raises DatasetNotFoundError if not prepared.
    >>> batches = pipeline.train_batches(start_step=0)
    >>> next(batches)["image"].shape  # [batch_size // process_count, 32, 32, 3]
"""

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from clu import deterministic_data

from ltpa_jax.data import (
    augment,
    cluttered_digits,
    device,
    image_folder,
    images,
    prepare,
    transforms,
)
from ltpa_jax.data.registry import DatasetInfo, get_dataset_info

Batch = dict[str, np.ndarray]

CLUTTERED_DIGITS_SEED = 0  # The generated dataset is fixed; `config.seed` orders and augments.


def _hide_gpus_from_tf() -> None:
    """Keeps TensorFlow off the accelerators (they belong to JAX) and quiet."""
    tf.get_logger().setLevel("ERROR")
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already initialised its devices: too late, and harmless on CPU.
        pass


_hide_gpus_from_tf()


# ---------------------------------------------------------------------------------------------
# Hosts and global arrays.


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The contiguous slice `[start, end)` of a split that one host reads.

    The rule of `tfds.even_splits(drop_remainder=False)`: the first `num_examples %
    process_count` hosts get one example more. Slices of all hosts tile `[0, num_examples)`.
    """
    # Not tfds.split_for_jax_process (same rule): the augmentation is keyed by the example's
    # index in the split, which needs `start`; the generated digits are no TFDS split.
    base, extra = divmod(num_examples, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + int(process_index < extra)


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


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index={index} must be in [0, process_count={count}).")
    return index, count


def _local_batch_size(global_size: int, process_count: int, name: str) -> int:
    # `validation.check_config` checks the config against jax.process_count(); this checks
    # the process_count (and batch size) a caller passes, e.g. to read one host's share.
    if global_size <= 0 or global_size % process_count:
        raise ValueError(
            f"{name}={global_size} must be a positive multiple of the number of "
            f"processes ({process_count}) so that every host gets the same number of rows."
        )
    return global_size // process_count


def first_examples(batches: Iterator[Batch], num_examples: int) -> Iterator[Batch]:
    """Padded batches up to `num_examples` real rows (all when <= 0).

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


# ---------------------------------------------------------------------------------------------
# Reading.


@functools.lru_cache(maxsize=4)
def _digits_split(split: str, num_examples: int, image_size: int) -> dict[str, np.ndarray]:
    data = cluttered_digits.make_split(split, num_examples, image_size, CLUTTERED_DIGITS_SEED)
    for array in data.values():
        array.setflags(write=False)
    return data


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def _batched(ds: tf.data.Dataset, local_batch: int) -> tf.data.Dataset:
    """Whole training batches of `local_batch` rows, prefetched."""
    ds = ds.batch(local_batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _named_file_errors(batches: Iterator[Batch]) -> Iterator[Batch]:
    """`batches`, with an image file that fails to decode raised as a ValueError naming it."""
    try:
        yield from batches
    except tf.errors.InvalidArgumentError as error:
        raise image_folder.decode_error(error) from None


def _epochs(epoch_dataset, start_step: int, steps_per_epoch: int) -> Iterator[Batch]:
    """`epoch_dataset(epoch, skip_batches)`'s batches from `start_step` on, epoch after epoch."""
    epoch, skip_batches = divmod(start_step, steps_per_epoch)
    while True:
        yield from _named_file_errors(epoch_dataset(epoch, skip_batches).as_numpy_iterator())
        epoch, skip_batches = epoch + 1, 0


def _epoch_shuffle_seed(seed: int, epoch: int) -> int:
    """A 63-bit tf.data shuffle seed derived from (seed, epoch)."""
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class Pipeline:
    """The data of one experiment: sizes, names, normalisation and batch streams.

    Made once by `from_config`; the streams use what it captured and never re-read the config.
    """

    def __init__(
        self,
        *,
        info: DatasetInfo,
        preprocess: transforms.Preprocess,
        builder: Any,
        batch_size: int,
        eval_batch_size: int,
        shuffle_buffer: int,
        num_digits: dict[str, int],
        not_prepared: prepare.DatasetNotFoundError | None = None,
        folder: image_folder.ImageFolder | None = None,
    ):
        """Use `from_config`; the arguments are what it reads from the config."""
        self.info = info
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_buffer = shuffle_buffer
        self._builder = builder
        self._num_digits = num_digits
        self._not_prepared = not_prepared
        self._folder = folder
        self._split_sizes: dict[str, int] = {}
        self._class_names: list[str] | None = None
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, *, require_data: bool = True
    ) -> "Pipeline":
        """Reads a validated config (see `validation.check_config`) into a pipeline.

        Builds the TFDS builder once and checks once that the data is prepared; prepares and
        downloads nothing (that is `data.prepare_dataset`). An image folder
        (`config.dataset="image_folder"`) is scanned once (`data.image_folder.scan`): its
        classes, splits and masks.

        Args:
            config: The experiment config.
            require_data: False to make a pipeline for what needs no data (class names,
                normalisation, image files) where the dataset is not prepared; its streams and
                split sizes then raise the `DatasetNotFoundError`.

        Raises:
            ValueError: Unknown `config.dataset`, or (with `require_data`) an image folder that
                cannot be used (`data.image_folder.ImageFolderError`, naming path and fix).
            DatasetNotFoundError: A TFDS dataset is not prepared in `config.data_dir` (and
                `require_data`); the message names the directory searched and the command that
                prepares it.
        """
        info = get_dataset_info(config.dataset)
        builder, not_prepared, folder = None, None, None
        if info.source == "image_folder":
            try:
                folder = image_folder.from_config(config)
                info = folder.dataset_info(info)
            except image_folder.ImageFolderError as error:
                if require_data:
                    raise
                # Without the folder: the run's classes, named "0", "1", ...
                not_prepared = prepare.DatasetNotFoundError(str(error))
                info = dataclasses.replace(info, num_classes=config.model.num_classes)
        elif info.tfds_name is not None:
            builder = prepare.tfds_builder(info, config.data_dir)
            try:
                prepare.check_prepared(info, config, builder)
            except prepare.DatasetNotFoundError as error:
                if require_data:
                    raise
                not_prepared = error
        return cls(
            info=info,
            preprocess=transforms.Preprocess.from_config(info, config),
            builder=builder,
            batch_size=config.batch_size,
            eval_batch_size=config.eval_batch_size,
            shuffle_buffer=config.shuffle_buffer,
            num_digits={
                info.train_split: config.num_digits_train,
                info.test_split: config.num_digits_test,
            },
            not_prepared=not_prepared,
            folder=folder,
        )

    # -----------------------------------------------------------------------------------------
    # Sizes, names, pixels.

    @property
    def image_size(self) -> int:
        """Side S of the model's input."""
        return self.preprocess.image_size

    def _require_data(self) -> None:
        if self._not_prepared is not None:
            raise prepare.DatasetNotFoundError(str(self._not_prepared))

    def _resolve_split(self, split: str) -> str:
        names = {"train": self.info.train_split, "test": self.info.test_split}
        if split not in names:
            raise ValueError(f"split={split!r} is not supported; use 'train' or 'test'.")
        return names[split]

    def _tfds_split_size(self, split: str) -> int:
        """Number of examples in a split (TFDS split name), all hosts together."""
        if split not in self._split_sizes:
            self._require_data()
            if self._folder is not None:
                size = len(self._folder.split(split))
            elif self.info.source == "generated":
                size = self._num_digits[split]
            elif split in self._builder.info.splits:
                size = self._builder.info.splits[split].num_examples
            else:  # Under tfds.testing.mock_data split sizes are unknown: count the examples.
                ds = self._builder.as_dataset(split=split, shuffle_files=False)
                size = int(ds.cardinality())
                if size < 0:
                    size = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
            self._split_sizes[split] = size
        return self._split_sizes[split]

    def split_size(self, split: str) -> int:
        """Number of examples in the "train" or "test" split (all hosts together)."""
        return self._tfds_split_size(self._resolve_split(split))

    @property
    def num_train_examples(self) -> int:
        """Number of examples in the whole training split (all hosts together)."""
        return self._tfds_split_size(self.info.train_split)

    @property
    def steps_per_epoch(self) -> int:
        """Training steps per epoch: whole global batches of the training split."""
        return self.num_train_examples // self.batch_size

    @property
    def class_names(self) -> list[str]:
        """Class names for pictures: TFDS's or the image folder's names when known offline,
        else "0", "1", ..."""
        if self._class_names is None:
            self._class_names = [str(i) for i in range(self.info.num_classes)]
            if self._folder is not None:
                self._class_names = list(self._folder.class_names)
            elif self._builder is not None:
                try:
                    names = self._builder.info.features["label"].names
                    if len(names) == self.info.num_classes:
                        self._class_names = [str(name) for name in names]
                except Exception:  # noqa: BLE001 - names are cosmetic; never fail a run for them.
                    pass
        return list(self._class_names)

    def denormalize(self, images: Any) -> np.ndarray:
        """Undoes the normalisation, for pictures: float `[B, H, W, 3]` -> float32 in [0, 1]."""
        return transforms.denormalize(images, self.info)

    def load_image_file(self, path: str) -> np.ndarray:
        """An image file (any format, size, bit depth) as the model's input: float32 `[S, S, 3]`.

        Raises:
            ValueError: the file cannot be decoded as an image (the message names it).
        """
        return images.load_image_file(path, self.info, self.image_size)

    @property
    def supports_device_input(self) -> bool:
        """Whether the device-resident path (`data.device`) can train on this dataset and size.

        CIFAR-10/100 and SVHN at 32x32, STL-10 at 96x96: their training order and augmentation
        come from `data.augment` on both paths.
        """
        return device.supports(self.info, self.image_size)

    def split_arrays(self, split: str) -> dict[str, np.ndarray]:
        """A whole split in file order, read once: what the device path copies to the devices.

        Args:
            split: "train" or "test".

        Returns:
            "image" uint8 `[N, S, S, 3]` (unaugmented, unnormalised) and "label" int32 `[N]`,
            read-only.

        Raises:
            ValueError: the dataset is not one of `supports_device_input`.
        """
        if not self.supports_device_input:
            raise ValueError(
                f"{self.info.name!r} at {self.image_size}x{self.image_size} is not kept in memory "
                "as whole arrays; only datasets stored at the input size with pad-and-crop "
                "augmentation are (CIFAR-10/100, SVHN at 32, STL-10 at 96)."
            )
        self._require_data()
        name = self._resolve_split(split)
        if name not in self._arrays:
            size = self._tfds_split_size(name)
            ds = self._read_host_slice(name, 0, size)
            ds = ds.map(lambda example: {"image": example["image"], "label": example["label"]})
            whole = ds.batch(max(size, 1)).get_single_element()
            arrays = {
                "image": whole["image"].numpy().astype(np.uint8),
                "label": whole["label"].numpy().astype(np.int32),
            }
            for array in arrays.values():
                array.setflags(write=False)
            self._arrays[name] = arrays
        return self._arrays[name]

    # -----------------------------------------------------------------------------------------
    # Streams.

    def _read_host_slice(self, split: str, start: int, end: int) -> tf.data.Dataset:
        """Examples `[start, end)` of a split (TFDS split name), in file order.

        Returns:
            A dataset of dicts: "image" uint8 `[H, W, 3]` (an image folder's: float32 in
            [0, 255]), "label" int32 `[]`, and where the dataset has them "box" float32 `[4]`
            (digits: pixels; CUB: TFDS's normalised bbox) and "segmentation" uint8 `[h, w, 1]`
            (CUB; an image folder with masks: 255 on the foreground).
        """
        info = self.info
        if self._folder is not None:
            return self._folder.read(split, start, end)
        if info.source == "generated":
            data = _digits_split(split, self._num_digits[split], self.image_size)
            keys = ("image", "label", "box")
            return tf.data.Dataset.from_tensor_slices({k: data[k][start:end] for k in keys})

        ds = self._builder.as_dataset(
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

    def train_batches(
        self,
        start_step: int = 0,
        *,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> Iterator[Batch]:
        """An infinite stream of host-local training batches, exactly resumable at any step.

        Epoch `e` (steps `[e * steps_per_epoch, (e + 1) * steps_per_epoch)`) shuffles this
        host's slice with a seed derived from `(config.seed, e)` and augments each example with
        stateless ops keyed by `(config.seed, e, example index)`, so a batch depends only on the
        config, the step and the host. Note: a global TF seed (`tf.random.set_seed`) also enters
        tf.data's shuffle; set it the same way (or not at all) in runs that resume each other.
        CIFAR-10/100 and SVHN (`supports_device_input`) instead take the epoch's order, crops
        and flips from `data.augment`, as the device path does: host `h` yields rows
        `[h * b, (h + 1) * b)` of each global batch.

        Args:
            start_step: Global step of the first batch yielded (0 for a fresh run).
            process_index: This host's index; defaults to `jax.process_index()`.
            process_count: Number of hosts; defaults to `jax.process_count()`.

        Returns:
            An iterator of dicts with "image" float32 `[b, S, S, 3]` (normalised) and "label"
            int32 `[b]`, where `b = config.batch_size // process_count`.

        Raises:
            DatasetNotFoundError: The data is not prepared (pipeline made with
                `require_data=False`).
            ValueError: A batch size that does not split over `process_count` hosts or exceeds
                the training split, or a negative start_step.
        """
        self._require_data()
        info, preprocess = self.info, self.preprocess
        index, count = _processes(process_index, process_count)
        local_batch = _local_batch_size(self.batch_size, count, "config.batch_size")
        total = self.num_train_examples
        steps = self.steps_per_epoch
        if steps < 1:
            raise ValueError(
                f"config.batch_size={self.batch_size} is larger than the training split of "
                f"{info.name!r} ({total} examples); lower it."
            )
        if start_step < 0:
            raise ValueError(f"start_step={start_step} must be >= 0.")
        if self.supports_device_input:
            return self._augment_ordered_batches(start_step, index, count, local_batch)
        start, end = host_range(total, index, count)

        base = self._read_host_slice(info.train_split, start, end).enumerate(start)
        base = base.map(
            lambda i, example: preprocess.train_prepare({**example, "index": i}),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        base = base.cache().with_options(_options())
        # Fill the cache with one full pass now: an epoch stops after `steps` batches, and a
        # cache that is not read to its end is thrown away.
        try:
            cached = int(base.reduce(np.int64(0), lambda n, _: n + 1))
        except tf.errors.InvalidArgumentError as error:
            raise image_folder.decode_error(error) from None
        if cached != end - start:
            raise RuntimeError(
                f"Read {cached} training examples on this host, expected {end - start}."
            )
        buffer_size = max(1, min(self.shuffle_buffer, end - start))

        def epoch_dataset(epoch: int, skip_batches: int) -> tf.data.Dataset:
            seed = _epoch_shuffle_seed(preprocess.seed, epoch)
            ds = base.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)
            # Every host stops after `steps` batches, whatever the size of its slice.
            ds = ds.take(steps * local_batch).skip(skip_batches * local_batch)
            ds = ds.map(
                lambda example: preprocess.train_augment(example, epoch),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            return _batched(ds, local_batch)

        return _epochs(epoch_dataset, start_step, steps)

    def _augment_ordered_batches(
        self, start_step: int, index: int, count: int, local_batch: int
    ) -> Iterator[Batch]:
        """`train_batches` for CIFAR/SVHN: order, crops and flips from `data.augment`.

        The global batch of step `s` is `epoch_permutation(seed, e, N)[i * B:(i + 1) * B]` with
        `e, i = divmod(s, N // B)`; host `h` yields rows `[h * b, (h + 1) * b)` of it.
        """
        data = self.split_arrays("train")
        preprocess, flip = self.preprocess, self.info.flip
        total, steps = len(data["label"]), self.steps_per_epoch
        cpu = jax.local_devices(backend="cpu")[0]  # Host work stays off the accelerators.

        def epoch_dataset(epoch: int, skip_batches: int) -> tf.data.Dataset:
            with jax.default_device(cpu):
                order = np.asarray(augment.epoch_permutation(preprocess.seed, epoch, total))
                rows = order[: steps * self.batch_size].reshape(steps, count, local_batch)
                rows = rows[skip_batches:, index].reshape(-1)
                offsets, flips = augment.example_augmentation(
                    preprocess.seed, epoch, rows, padding=preprocess.crop_padding, flip=flip
                )
            ds = tf.data.Dataset.from_tensor_slices(
                {
                    "image": data["image"][rows],
                    "label": data["label"][rows],
                    "offset": np.asarray(offsets),
                    "flip": np.asarray(flips),
                }
            )
            ds = ds.map(preprocess.pad_crop_flip, num_parallel_calls=tf.data.AUTOTUNE)
            return _batched(ds, local_batch)

        return _epochs(epoch_dataset, start_step, steps)

    def eval_batches(
        self,
        split: str = "test",
        *,
        num_examples: int = -1,
        batch_size: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> Iterator[Batch]:
        """One pass over a split in file order, in host-local batches padded to full size.

        Every host yields the same number of batches, `ceil(ceil(N / process_count) / b)`; rows
        past the end of a host's slice are zeros with `mask` False.

        Args:
            split: "test" or "train".
            num_examples: Stop after this many real rows, the rows past it masked out (for one
                host's analysis: the hosts of a multi-host run would stop at different
                batches); all rows when <= 0.
            batch_size: Global batch size (all hosts); defaults to `config.eval_batch_size`.
            process_index: This host's index; defaults to `jax.process_index()`.
            process_count: Number of hosts; defaults to `jax.process_count()`.

        Returns:
            An iterator of dicts with "image" float32 `[b, S, S, 3]`, "label" int32 `[b]`,
            "mask" bool `[b]` (True for real rows), plus for cluttered_digits and CUB "box"
            float32 `[b, 4]` (ymin, xmin, ymax, xmax in input pixels) and for CUB and an image
            folder with masks "segmentation" float32 `[b, S, S]` in [0, 1];
            `b = batch_size // process_count`.

        Raises:
            DatasetNotFoundError: The data is not prepared (pipeline made with
                `require_data=False`).
            ValueError: An unknown split, or a batch size that does not split over
                `process_count` hosts.
        """
        self._require_data()
        split = self._resolve_split(split)
        index, count = _processes(process_index, process_count)
        if batch_size is None:
            batch_size, name = self.eval_batch_size, "config.eval_batch_size"
        else:
            name = "batch_size"
        local_batch = _local_batch_size(batch_size, count, name)
        total = self._tfds_split_size(split)
        start, end = host_range(total, index, count)
        num_batches = math.ceil(math.ceil(total / count) / local_batch)

        ds = self._read_host_slice(split, start, end)
        ds = ds.map(self.preprocess.eval, num_parallel_calls=tf.data.AUTOTUNE)
        ds = deterministic_data.pad_dataset(
            ds, batch_dims=[local_batch], pad_up_to_batches=num_batches, cardinality=end - start
        )
        ds = ds.batch(local_batch, drop_remainder=True)
        ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
        return first_examples(_named_file_errors(ds.as_numpy_iterator()), num_examples)
