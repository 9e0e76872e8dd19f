"""The device-resident input path: a split copied once to the devices, batches made there.

For datasets that fit in device memory (CIFAR-10/100 and SVHN: 150-230 MB as uint8), the
training split is copied once as uint8 `[N, H, W, C]` and every global batch is computed on
the devices from the step number alone: the epoch's order, the pad-and-crop and the flip come
from `augment` (the function of (seed, epoch, example) that the host path draws from too), so
the batches are those of the host path, a run resumes exactly at any step, and nothing goes
from the host to the devices per step. Evaluation batches are slices of the test split on the
devices, the last one padded and masked as the host path's.

The split is **replicated** on every device rather than sharded over the "data" axis: a batch
draws its examples from anywhere in the split, so a sharded split would need an all-to-all
per step; a replicated one costs its size on each device (CIFAR: 150 MB of 80 GB) and each
device gathers only its own rows of the batch (the indices are sharded over "data").
`check_fits` refuses a split larger than a fraction of one device's memory.

Several train steps per dispatch: `scan_steps` (over `k` stacked host batches) and
`scan_device_steps` (over `k` batches made on the devices) run `k` steps in one `lax.scan`,
with the same state and metrics as `k` single steps.

Example:
    >>> mesh = train.create_mesh()
    >>> data = DeviceTrainData(images, labels, mesh=mesh, spec=TrainSpec.from_config(config))
    >>> batch = data.batch(step)  # {"image": float32 [B, 32, 32, 3], "label": int32 [B]}
"""

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltpa_jax.data import augment
from ltpa_jax.data.registry import DatasetInfo

Batch = dict[str, jax.Array]

# The default share of one device's memory that a replicated split may take.
DEFAULT_MAX_FRACTION = 0.25


class DeviceMemoryError(ValueError):
    """A split does not fit the memory budget of the device-resident input path."""


# ---------------------------------------------------------------------------------------------
# Which datasets, and the memory budget.


def supports(info: DatasetInfo, image_size: int) -> bool:
    """Whether a dataset can be trained from device memory at this input size.

    Datasets stored at a fixed size equal to the input, with pad-crop augmentation (or none):
    CIFAR-10/100 and SVHN at 32x32, STL-10 at 96x96. CUB, Caltech-101 and image folders
    (resize-crop of variable-size images) and the generated digits keep the host path.
    """
    return info.augmentation == "pad_crop" and info.native_size == image_size


def memory_budget(
    device: jax.Device | None = None, max_fraction: float = DEFAULT_MAX_FRACTION
) -> tuple[int, str]:
    """Bytes the split may take on one device, and where the number comes from.

    GPUs and TPUs report their memory (`memory_stats()["bytes_limit"]`); the CPU backend does
    not, and there the budget is that fraction of the machine's physical memory.
    """
    device = jax.devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise or return None.
        stats = None
    if stats and stats.get("bytes_limit"):
        total = int(stats["bytes_limit"])
        source = f"{device.device_kind} memory_stats bytes_limit {total / 2**30:.1f} GiB"
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        source = f"host memory {total / 2**30:.1f} GiB ({device.platform} reports none)"
    return int(total * max_fraction), f"{max_fraction:g} x {source}"


def check_fits(
    num_bytes: int,
    *,
    device: jax.Device | None = None,
    max_fraction: float = DEFAULT_MAX_FRACTION,
    what: str = "the training split",
) -> None:
    """Refuses a split that would take more than `max_fraction` of one device's memory.

    Raises:
        DeviceMemoryError: naming `config.input_on_device` and the way out.
    """
    budget, source = memory_budget(device, max_fraction)
    if num_bytes > budget:
        raise DeviceMemoryError(
            f"config.input_on_device: {what} takes {num_bytes / 2**20:.1f} MiB on every device, "
            f"over the budget of {budget / 2**20:.1f} MiB ({source}; "
            f"config.input_on_device_max_fraction={max_fraction:g}). Set "
            "--config.input_on_device=off to feed batches from the host, or raise "
            "--config.input_on_device_max_fraction."
        )


# ---------------------------------------------------------------------------------------------
# Training batches.


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Everything but the arrays that a training batch depends on (static under jit).

    Attributes:
        batch_size: Global batch `B`.
        seed: `config.seed`.
        augment: `config.augment`; False: no crop, no flip (the order is still shuffled).
        padding: `config.crop_padding`.
        mode: `config.crop_padding_mode`.
        flip: The dataset's `DatasetInfo.flip`.
        mean: Per-channel mean in [0, 1].
        std: Per-channel standard deviation in [0, 1].
        sharding: Where the batch's rows go (`NamedSharding(mesh, P("data"))`), or None.
    """

    batch_size: int
    seed: int
    augment: bool
    padding: int
    mode: augment.PadMode
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sharding: NamedSharding | None = None

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        info: DatasetInfo,
        sharding: NamedSharding | None = None,
    ) -> "TrainSpec":
        return cls(
            batch_size=config.batch_size,
            seed=config.seed,
            augment=bool(config.augment),
            padding=config.crop_padding,
            mode=config.crop_padding_mode,
            flip=info.flip,
            mean=tuple(info.mean),
            std=tuple(info.std),
            sharding=sharding,
        )


def epoch_orders(seed: int, first_epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The orders of epochs `first_epoch` and `first_epoch + 1`: int32 `[2, N]` (jit-able).

    A dispatch of at most `steps_per_epoch` steps spans at most these two epochs; the orders are
    computed once per epoch (`DeviceTrainData.orders`), not in every step.
    """
    return jnp.stack(
        [augment.epoch_permutation(seed, first_epoch + e, num_examples) for e in range(2)]
    )


def batch_indices(
    orders: jax.Array, first_epoch: int | jax.Array, step: int | jax.Array, spec: TrainSpec
) -> tuple[jax.Array, jax.Array]:
    """The epoch of `step` and the split positions of its global batch.

    Args:
        orders: int32 `[2, N]`, `epoch_orders(seed, first_epoch, N)`.
        first_epoch: The epoch of `orders[0]`; `step` must fall in it or the next.
        step: Global step.
        spec: The static rest.

    Returns:
        (epoch int32 `[]`, indices int32 `[B]`): `epoch_permutation(seed, epoch, N)[i * B:
        (i + 1) * B]` with `epoch, i = divmod(step, N // B)`.
    """
    steps_per_epoch = orders.shape[1] // spec.batch_size
    epoch, position = jnp.divmod(jnp.asarray(step, jnp.int32), steps_per_epoch)
    order = jax.lax.dynamic_index_in_dim(orders, epoch - first_epoch, keepdims=False)
    indices = jax.lax.dynamic_slice_in_dim(order, position * spec.batch_size, spec.batch_size)
    if spec.sharding is not None:
        indices = jax.lax.with_sharding_constraint(indices, spec.sharding)
    return epoch, indices


def train_batch(
    data: Batch,
    orders: jax.Array,
    first_epoch: int | jax.Array,
    step: int | jax.Array,
    spec: TrainSpec,
) -> Batch:
    """The global training batch of `step` from a split held on the devices (pure, jit-able).

    Args:
        data: "image" uint8 `[N, H, W, C]` and "label" int `[N]`, the whole split in file order.
        orders: int32 `[2, N]`, `epoch_orders(spec.seed, first_epoch, N)`.
        first_epoch: The epoch of `orders[0]` (`step` falls in it or the next).
        step: Global step (may be traced).
        spec: The static rest.

    Returns:
        "image" float32 `[B, H, W, C]` (augmented, normalised) and "label" int32 `[B]`.
    """
    epoch, indices = batch_indices(orders, first_epoch, step, spec)
    images = jnp.take(data["image"], indices, axis=0)
    if spec.augment:
        images = augment.augment_batch(
            images,
            indices,
            seed=spec.seed,
            epoch=epoch,
            padding=spec.padding,
            mode=spec.mode,
            flip=spec.flip,
        )
    labels = jnp.take(data["label"], indices, axis=0).astype(jnp.int32)
    batch = {"image": augment.normalize(images, spec.mean, spec.std), "label": labels}
    if spec.sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, spec.sharding)
    return batch


def put_replicated(array: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
    """A host array, whole on every device of the mesh (each process passes the same array)."""
    array = np.asarray(array)
    sharding = NamedSharding(mesh, P())
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


class DeviceTrainData:
    """A training split on the devices and its jitted `batch(step)`.

    Args:
        images: uint8 `[N, H, W, C]`, the whole training split in file order (every process
            passes the same array).
        labels: int `[N]`.
        mesh: The training mesh (axis "data").
        spec: As `TrainSpec` (its `sharding` is set here to the mesh's "data" axis).
        max_fraction: The memory budget, as `check_fits`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        mesh: jax.sharding.Mesh,
        spec: TrainSpec,
        max_fraction: float = DEFAULT_MAX_FRACTION,
    ):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}."
            )
        self.num_examples = len(labels)
        if self.num_examples < spec.batch_size:
            raise ValueError(
                f"config.batch_size={spec.batch_size} is larger than the training split "
                f"({self.num_examples} examples); lower it."
            )
        labels = np.asarray(labels, np.int32)
        check_fits(
            images.nbytes + labels.nbytes, device=mesh.devices.flat[0], max_fraction=max_fraction
        )
        self.sharding = NamedSharding(mesh, P("data"))
        self.spec = dataclasses.replace(spec, sharding=self.sharding)
        self.steps_per_epoch = self.num_examples // spec.batch_size
        self.mesh = mesh
        self.data = {"image": put_replicated(images, mesh), "label": put_replicated(labels, mesh)}
        self._batch = jax.jit(train_batch, static_argnums=4, out_shardings=self.sharding)
        self._orders = jax.jit(
            epoch_orders, static_argnums=(0, 2), out_shardings=NamedSharding(mesh, P())
        )
        self._orders_of: dict[int, jax.Array] = {}

    def orders(self, first_epoch: int) -> jax.Array:
        """`epoch_orders` of `first_epoch` and the next, made once and kept: int32 `[2, N]`."""
        if first_epoch not in self._orders_of:
            self._orders_of = {  # Keep only the latest: epochs go forward.
                first_epoch: self._orders(self.spec.seed, np.int32(first_epoch), self.num_examples)
            }
        return self._orders_of[first_epoch]

    def batch(self, step: int) -> Batch:
        """The global batch of `step`, sharded over "data"."""
        epoch = step // self.steps_per_epoch
        return self._batch(
            self.data, self.orders(epoch), np.int32(epoch), np.int32(step), self.spec
        )

    def jit_steps(
        self, step_fn: "StepFn", num_steps: int = 1
    ) -> Callable[[Any, int], tuple[Any, Any]]:
        """`num_steps` train steps per dispatch on this split's batches.

        On accelerators the batches and the steps are one program (`lax.scan` for k > 1). On the
        CPU, k = 1 runs the batch and the step as two programs, as fast as a step on a ready
        batch; the fused program was measured slower there (585-611 ms against 329 ms a step,
        VGG-att3 at width 1/8, Winograd convolution, on a loaded 2-core machine, 2026-11), and
        a step inside `lax.scan` 2.3x (Winograd) to 36x (XLA's convolution) slower, so keep
        `config.steps_per_dispatch` at 1 there. The results are the same either way.

        Args:
            step_fn: `(state, batch) -> (state, metrics)`, e.g. `partial(train.train_step,
                schedule=schedule)`.
            num_steps: `k` (`config.steps_per_dispatch`), at most `steps_per_epoch`.

        Returns:
            `run(state, first_step) -> (state after steps first_step .. first_step + k - 1,
            metrics stacked [k, ...])`, jitted over the mesh, the state donated.

        Raises:
            ValueError: `num_steps` is not in `[1, steps_per_epoch]`.
        """
        if not 1 <= num_steps <= self.steps_per_epoch:
            raise ValueError(
                f"config.steps_per_dispatch={num_steps} must be between 1 and the steps per "
                f"epoch ({self.steps_per_epoch})."
            )
        replicated = NamedSharding(self.mesh, P())
        if num_steps == 1 and self.mesh.devices.flat[0].platform == "cpu":
            step = jax.jit(
                lambda state, batch: _stacked_metrics(*step_fn(state, batch)),
                in_shardings=(replicated, self.sharding),
                out_shardings=(replicated, replicated),
                donate_argnums=0,
            )
            return lambda state, first_step: step(state, self.batch(first_step))
        if num_steps == 1:
            fused = functools.partial(_fused_step, step_fn)
            run = jax.jit(
                fused, static_argnums=5, out_shardings=(replicated, replicated), donate_argnums=0
            )
        else:
            run = jit_device_steps(step_fn, self.mesh, num_steps)

        def call(state, first_step: int):
            epoch = first_step // self.steps_per_epoch
            orders = self.orders(epoch)
            return run(state, self.data, orders, np.int32(epoch), np.int32(first_step), self.spec)

        return call

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """The batches of steps `start_step, start_step + 1, ...` (infinite)."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1


def _stacked_metrics(state: Any, metrics: Any) -> tuple[Any, Any]:
    """One step's metrics with a leading axis of 1, as `lax.scan` stacks k steps' metrics."""
    return state, jax.tree.map(lambda x: x[None], metrics)


def _fused_step(step_fn, state, data, orders, first_epoch, step, spec):
    """One train step on its batch, made in the same program (`jit_steps` with k = 1)."""
    return _stacked_metrics(*step_fn(state, train_batch(data, orders, first_epoch, step, spec)))


# ---------------------------------------------------------------------------------------------
# Evaluation batches.


def eval_batch(data: Batch, index: int | jax.Array, spec: "EvalSpec") -> Batch:
    """Batch `index` of a padded split on the devices (pure, jit-able).

    Args:
        data: "image" uint8 `[M, H, W, C]`, "label" `[M]`, "mask" bool `[M]`, the split padded
            with zero rows to `M`, a multiple of the batch.
        index: Batch number (may be traced).
        spec: The static rest.

    Returns:
        "image" float32 `[B, H, W, C]` (normalised), "label" int32 `[B]`, "mask" bool `[B]`.
    """
    start = jnp.asarray(index, jnp.int32) * spec.batch_size
    rows = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, spec.batch_size), data)
    image = augment.normalize(rows["image"], spec.mean, spec.std)
    return {
        # Padded rows are zeros after normalisation, as the host path's padding.
        "image": jnp.where(rows["mask"][:, None, None, None], image, 0.0),
        "label": rows["label"].astype(jnp.int32),
        "mask": rows["mask"],
    }


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Static part of an evaluation batch: global batch size, mean and std."""

    batch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class DeviceEvalData:
    """An evaluation split on the devices, in file order, the last batch padded and masked.

    Args:
        images: uint8 `[N, H, W, C]`, the split in file order.
        labels: int `[N]`.
        mesh: The mesh (axis "data").
        batch_size: Global evaluation batch `B` (`config.eval_batch_size`).
        mean, std: The dataset's normalisation.
        max_fraction: The memory budget, as `check_fits`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        mesh: jax.sharding.Mesh,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        max_fraction: float = DEFAULT_MAX_FRACTION,
    ):
        n = len(labels)
        self.num_examples = n
        self.num_batches = max(1, math.ceil(n / batch_size))
        rows = self.num_batches * batch_size
        padded = np.zeros((rows, *images.shape[1:]), np.uint8)
        padded[:n] = images
        padded_labels = np.zeros(rows, np.int32)
        padded_labels[:n] = labels
        mask = np.arange(rows) < n
        check_fits(
            padded.nbytes + padded_labels.nbytes + mask.nbytes,
            device=mesh.devices.flat[0],
            max_fraction=max_fraction,
            what="the evaluation split",
        )
        self.sharding = NamedSharding(mesh, P("data"))
        self.spec = EvalSpec(batch_size, tuple(mean), tuple(std))
        self.data = {
            "image": put_replicated(padded, mesh),
            "label": put_replicated(padded_labels, mesh),
            "mask": put_replicated(mask, mesh),
        }
        self._batch = jax.jit(eval_batch, static_argnums=2, out_shardings=self.sharding)

    def batch(self, index: int) -> Batch:
        """Evaluation batch `index` (`0 <= index < num_batches`), sharded over "data"."""
        return self._batch(self.data, np.int32(index), self.spec)

    def batches(self) -> Iterator[Batch]:
        """One pass over the split: `num_batches` batches."""
        for index in range(self.num_batches):
            yield self.batch(index)


# ---------------------------------------------------------------------------------------------
# Several train steps per dispatch.

StepFn = Callable[[Any, Batch], tuple[Any, Any]]


def scan_steps(step_fn: StepFn, state: Any, batches: Batch) -> tuple[Any, Any]:
    """`k` train steps in one `lax.scan` over stacked batches (pure, jit-able).

    Args:
        step_fn: `(state, batch) -> (state, metrics)`, e.g. `partial(train.train_step,
            schedule=schedule)`.
        state: The train state.
        batches: The `k` batches stacked on a leading axis, e.g. "image" `[k, B, H, W, C]`.

    Returns:
        (state after the `k` steps, the metrics of each step stacked `[k, ...]`; for a clu
        `Collection`, `.reduce()` gives what merging the `k` single steps' metrics gives).
    """
    return jax.lax.scan(step_fn, state, batches)


def scan_device_steps(
    step_fn: StepFn,
    state: Any,
    data: Batch,
    orders: jax.Array,
    first_epoch: int | jax.Array,
    first_step: int | jax.Array,
    num_steps: int,
    spec: TrainSpec,
) -> tuple[Any, Any]:
    """`num_steps` train steps in one `lax.scan`, each on its `train_batch`.

    Args:
        step_fn: `(state, batch) -> (state, metrics)`.
        state: The train state.
        data: The training split on the devices (`DeviceTrainData.data`).
        orders: `epoch_orders(spec.seed, first_epoch, N)`.
        first_epoch: The epoch of `first_step`.
        first_step: Global step of the first batch (may be traced).
        num_steps: `k` (static), at most the steps per epoch.
        spec: As `train_batch`.

    Returns:
        As `scan_steps`.
    """

    def body(state, step):
        return step_fn(state, train_batch(data, orders, first_epoch, step, spec))

    steps = jnp.asarray(first_step, jnp.int32) + jnp.arange(num_steps, dtype=jnp.int32)
    return jax.lax.scan(body, state, steps)


def jit_device_steps(
    step_fn: StepFn, mesh: jax.sharding.Mesh, num_steps: int
) -> Callable[[Any, Batch, int, TrainSpec], tuple[Any, Any]]:
    """`scan_device_steps` under `jax.jit` over `mesh`: state replicated and donated.

    Returns:
        `fn(state, data, orders, first_epoch, first_step, spec) -> (state, stacked metrics)`;
        `DeviceTrainData.jit_steps` supplies all but the state and the step.
    """
    replicated = NamedSharding(mesh, P())

    def run(state, data, orders, first_epoch, first_step, spec):
        return scan_device_steps(
            step_fn, state, data, orders, first_epoch, first_step, num_steps, spec
        )

    return jax.jit(
        run,
        static_argnums=5,
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def jit_scan_steps(
    step_fn: StepFn, mesh: jax.sharding.Mesh
) -> Callable[[Any, Batch], tuple[Any, Any]]:
    """`scan_steps` under `jax.jit`: batches `[k, B, ...]` sharded on B, state donated."""
    replicated = NamedSharding(mesh, P())
    stacked = NamedSharding(mesh, P(None, "data"))
    return jax.jit(
        functools.partial(scan_steps, step_fn),
        in_shardings=(replicated, stacked),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
