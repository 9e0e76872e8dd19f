"""Per-example transforms inside tf.data: resizing, augmentation and normalisation.

`Preprocess` holds what the transforms read from a config (captured once by the pipeline) and
applies them to one example at a time:

- training, deterministic part (cached): a uint8 image of fixed size;
- training, random part: pad and crop or crop a resized image, and flip, with stateless ops
  keyed by `(seed, epoch, example index)`, then normalise;
- evaluation: resize straight to `image_size` and normalise; boxes in input pixels, CUB's
  segmentation as a float mask in [0, 1].

Example:
    >>> preprocess = Preprocess.from_config(get_dataset_info("cifar10"), config)
    >>> ds.map(lambda example: preprocess.eval(example))
"""

import dataclasses
from typing import Any, Literal

import ml_collections
import numpy as np
import tensorflow as tf

from ltpa_jax.data.registry import DatasetInfo

CropPaddingMode = Literal["constant", "reflect"]

CUB_RESIZE_RATIO = 8 / 7  # CUB training: resize to round(S * 8/7), then random crop S.
CROP_PADDING_MODES = {"constant": "CONSTANT", "reflect": "REFLECT"}  # config -> tf.pad mode.


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear, antialiased resize of `[H, W, C]` to float32 `[size, size, C]`."""
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), antialias=True)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Rounds float pixels in [0, 255] to uint8 (clipped)."""
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def normalize(image: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
    """`[..., 3]` pixels in [0, 255] -> float32 standardised with the dataset's mean and std."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(info.mean)) / tf.constant(info.std)


def denormalize(images: Any, info: DatasetInfo) -> np.ndarray:
    """Undoes `normalize`, for pictures.

    Args:
        images: float `[B, H, W, 3]` normalised images (NumPy or JAX).
        info: The dataset they come from.

    Returns:
        float32 `[B, H, W, 3]` in [0, 1].
    """
    images = np.asarray(images, np.float32)
    std, mean = np.asarray(info.std, np.float32), np.asarray(info.mean, np.float32)
    return np.clip(images * std + mean, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """The per-example transforms of one dataset at one input size.

    Attributes:
        info: The dataset.
        image_size: Side S of the model's input.
        augment: Random crops (and flips where `info.flip`) in training.
        seed: Keys the augmentation, with the epoch and the example index.
        crop_padding: Pixels padded on each side before a "pad_crop" random crop.
        crop_padding_mode: How "pad_crop" pads ("constant": zeros, "reflect").
    """

    info: DatasetInfo
    image_size: int
    augment: bool
    seed: int
    crop_padding: int
    crop_padding_mode: CropPaddingMode

    @classmethod
    def from_config(cls, info: DatasetInfo, config: ml_collections.ConfigDict) -> "Preprocess":
        """Reads the transform fields of a (validated) config."""
        return cls(
            info=info,
            image_size=config.image_size,
            augment=config.augment,
            seed=config.seed,
            crop_padding=config.crop_padding,
            crop_padding_mode=config.crop_padding_mode,
        )

    def fixed_size(self, image: tf.Tensor) -> tf.Tensor:
        """Resizes to `image_size` unless the images are stored (or generated) at that size."""
        if self.info.source == "generated" or self.info.native_size == self.image_size:
            return image
        return to_uint8(resize(image, self.image_size))

    def train_prepare(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The deterministic part of training preprocessing (cached): a uint8 fixed-size image."""
        image = example["image"]
        if self.info.augmentation == "resize_crop":
            size = round(self.image_size * CUB_RESIZE_RATIO) if self.augment else self.image_size
            image = to_uint8(resize(image, size))
        else:
            image = self.fixed_size(image)
        return {"image": image, "label": example["label"], "index": example["index"]}

    def train_augment(self, example: dict[str, tf.Tensor], epoch: int) -> dict[str, tf.Tensor]:
        """The random part of training preprocessing, keyed by (seed, epoch, example index)."""
        image = example["image"]
        size = self.image_size
        if self.augment and self.info.augmentation != "none":
            key = tf.random.experimental.stateless_fold_in(
                tf.constant([self.seed, epoch], tf.int64), example["index"]
            )
            crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            if self.info.augmentation == "pad_crop":
                pad = self.crop_padding
                mode = CROP_PADDING_MODES[self.crop_padding_mode]
                image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode)
            image = tf.image.stateless_random_crop(image, (size, size, 3), seed=crop_key)
            if self.info.flip:
                image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
        image = tf.ensure_shape(image, (size, size, 3))
        return {"image": normalize(image, self.info), "label": example["label"]}

    def pad_crop_flip(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Training transform with the crop and flip drawn by `data.augment` (CIFAR, SVHN).

        `example` carries "image" uint8 `[S, S, 3]`, "label", and the draws of
        `augment.example_augmentation` for it: "offset" int32 `[2]` (row, column in the padded
        image) and "flip" bool `[]`; the pixels are those of `augment.pad_crop_flip`, which the
        device path computes from the same draws.
        """
        image = example["image"]
        if self.augment:
            pad = self.crop_padding
            mode = CROP_PADDING_MODES[self.crop_padding_mode]
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode)
            start = tf.concat([tf.cast(example["offset"], tf.int32), [0]], axis=0)
            image = tf.slice(image, start, [self.image_size, self.image_size, 3])
            image = tf.where(example["flip"], tf.reverse(image, axis=[1]), image)
        image = tf.ensure_shape(image, (self.image_size, self.image_size, 3))
        return {"image": normalize(image, self.info), "label": example["label"]}

    def eval(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Evaluation preprocessing, no randomness; CUB resized straight to S (boxes stay valid)."""
        info, size = self.info, self.image_size
        if info.augmentation == "resize_crop":
            image = resize(example["image"], size)
        else:
            image = self.fixed_size(example["image"])
        out = {
            "image": normalize(tf.ensure_shape(image, (size, size, 3)), info),
            "label": example["label"],
        }
        if info.has_box:
            # TFDS boxes are normalised (ymin, xmin, ymax, xmax); generated boxes are in pixels.
            box = example["box"]
            out["box"] = box * float(size) if info.tfds_name is not None else box
        if info.has_segmentation:
            mask = resize(example["segmentation"], size)[..., 0] / 255.0
            out["segmentation"] = tf.clip_by_value(mask, 0.0, 1.0)
        return out
