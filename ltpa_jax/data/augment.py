"""The training order and augmentation as one function of (seed, epoch, example index).

Both input paths draw from here, so that they hand the model the same batches:

* the epoch's order: `epoch_permutation(seed, epoch, N)`, a permutation of the whole split;
  the global batch of step `s` is `order[i * B:(i + 1) * B]` with `i = s % steps_per_epoch`
  (whole batches only: the last `N % B` examples of each order are dropped);
* each example's crop offsets and flip: `example_augmentation(seed, epoch, indices, ...)`,
  from a key folded from (seed, epoch, example index), so an example's crop does not depend on
  where it lands in the order, on the batch size or on the number of hosts;
* the pixels: `pad_crop_flip` (uint8 in, uint8 out) and `normalize`.

Everything is `jax.numpy` and jit-able; called with NumPy arrays outside `jit` it runs on the
default device and gives the same values (JAX's threefry keys are the same on every backend,
and the key implementation is named here, not taken from the global default).

Example:
    >>> order = epoch_permutation(seed=0, epoch=3, num_examples=50_000)  # int32 [50000]
    >>> idx = order[:128]
    >>> offsets, flips = example_augmentation(0, 3, idx, padding=4, flip=True)
    >>> images = pad_crop_flip(train_images[idx], offsets, flips, padding=4, mode="constant")
    >>> x = normalize(images, mean, std)  # float32 [128, 32, 32, 3]
"""

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

PadMode = Literal["constant", "reflect"]

# The key implementation, fixed so that a run's batches do not follow `jax_default_prng_impl`.
PRNG_IMPL = "threefry2x32"
# Sub-streams of one epoch's key: the order, and the per-example crops and flips.
_ORDER_STREAM, _EXAMPLE_STREAM = 0, 1


def epoch_key(seed: int | jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The key of one epoch: `fold_in(key(seed), epoch)` (threefry, whatever the default)."""
    return jax.random.fold_in(jax.random.key(seed, impl=PRNG_IMPL), epoch)


def epoch_permutation(
    seed: int | jax.Array, epoch: int | jax.Array, num_examples: int
) -> jax.Array:
    """The order in which epoch `epoch` visits a split of `num_examples` examples.

    Args:
        seed: `config.seed`.
        epoch: Epoch number (`step // steps_per_epoch`); may be traced.
        num_examples: Size of the whole split (static).

    Returns:
        int32 `[num_examples]`, a permutation of `range(num_examples)`.
    """
    key = jax.random.fold_in(epoch_key(seed, epoch), _ORDER_STREAM)
    return jax.random.permutation(key, num_examples).astype(jnp.int32)


def example_augmentation(
    seed: int | jax.Array,
    epoch: int | jax.Array,
    indices: jax.Array | np.ndarray,
    *,
    padding: int,
    flip: bool,
) -> tuple[jax.Array, jax.Array]:
    """Crop offsets and flips of examples, each from a key folded from (seed, epoch, index).

    Args:
        seed: `config.seed`.
        epoch: Epoch number; may be traced.
        indices: int `[B]` positions of the examples in the whole split.
        padding: Pixels padded on each side before cropping back (`config.crop_padding`);
            offsets are drawn uniformly from `[0, 2 * padding]`.
        flip: Whether the dataset is flipped at all (`DatasetInfo.flip`); False gives no flips.

    Returns:
        (offsets int32 `[B, 2]` (row, column) into the padded image, flips bool `[B]`).
    """
    base = jax.random.fold_in(epoch_key(seed, epoch), _EXAMPLE_STREAM)

    def one(index):
        crop_key, flip_key = jax.random.split(jax.random.fold_in(base, index))
        offset = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1, dtype=jnp.int32)
        flipped = jax.random.bernoulli(flip_key) & flip
        return offset, flipped

    return jax.vmap(one)(jnp.asarray(indices, jnp.uint32))


def pad_crop_flip(
    images: jax.Array | np.ndarray,
    offsets: jax.Array | np.ndarray,
    flips: jax.Array | np.ndarray,
    *,
    padding: int,
    mode: PadMode = "constant",
) -> jax.Array:
    """Pads, crops back to the input size at `offsets`, and mirrors where `flips` is set.

    Args:
        images: `[B, H, W, C]` (uint8 or float).
        offsets: int `[B, 2]` (row, column) of each crop in the padded image, in
            `[0, 2 * padding]`.
        flips: bool `[B]`: mirror left-right after cropping.
        padding: Pixels added on each side ("constant": zeros; "reflect": mirrored without
            repeating the edge, as `tf.pad(mode="REFLECT")` and `np.pad(mode="reflect")`).
        mode: "constant" or "reflect".

    Returns:
        `[B, H, W, C]`, the dtype of `images`.
    """
    images = jnp.asarray(images)
    _, height, width, channels = images.shape
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(images, pad, mode=mode)

    def crop(image, offset):
        start = (offset[0], offset[1], jnp.int32(0))
        return jax.lax.dynamic_slice(image, start, (height, width, channels))

    cropped = jax.vmap(crop)(padded, jnp.asarray(offsets, jnp.int32))
    flips = jnp.asarray(flips, bool)[:, None, None, None]
    return jnp.where(flips, cropped[:, :, ::-1, :], cropped)


def normalize(
    images: jax.Array | np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> jax.Array:
    """uint8 pixels `[..., C]` -> float32 `(x / 255 - mean) / std` (the host path's formula)."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment_batch(
    images: jax.Array | np.ndarray,
    indices: jax.Array | np.ndarray,
    *,
    seed: int | jax.Array,
    epoch: int | jax.Array,
    padding: int,
    mode: PadMode,
    flip: bool,
) -> jax.Array:
    """`pad_crop_flip` of `images` (the examples at `indices`) with their epoch's draws.

    Args:
        images: uint8 `[B, H, W, C]`, the examples `indices` of the split, unaugmented.
        indices: int `[B]` their positions in the whole split.
        seed, epoch, padding, flip: As `example_augmentation`.
        mode: As `pad_crop_flip`.

    Returns:
        uint8 `[B, H, W, C]`.
    """
    offsets, flips = example_augmentation(seed, epoch, indices, padding=padding, flip=flip)
    return pad_crop_flip(images, offsets, flips, padding=padding, mode=mode)
