"""The dataset registry: what the pipeline and the validation need to know about each dataset.

One frozen `DatasetInfo` per dataset, looked up by the name in `config.dataset`. Adding a
dataset is adding an entry here (plus, for a new kind of preprocessing, a transform).

Three sources: TFDS datasets by name (`tfds`), the generated cluttered digits (`generated`),
and `image_folder`, a folder of images, one sub-folder per class (`data.image_folder`), whose
entry here is a template: its number of classes and whether it has masks come from the folder,
so a config's dataset is described by `dataset_info(config)`, which reads the folder.

Example:
    >>> info = get_dataset_info("cifar100")
    >>> info.num_classes, info.augmentation
    (100, 'pad_crop')
"""

import dataclasses
from collections.abc import Mapping
from typing import Literal

from ltpa_jax.data import cluttered_digits

Augmentation = Literal["pad_crop", "resize_crop", "none"]
Source = Literal["tfds", "generated", "image_folder"]

IMAGE_FOLDER = "image_folder"  # The registry name of a folder of images (config.image_folder).


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about one dataset.

    Attributes:
        name: Registry name (the value of `config.dataset`).
        tfds_name: TFDS builder name, or None for a dataset generated here or read from a folder.
        train_split: Name of the training split.
        test_split: Name of the evaluation split.
        num_classes: Number of classes (the model's `num_classes` must match); 0 in the
            `image_folder` template (the folder decides, see `dataset_info`).
        mean: Per-channel mean of the images in [0, 1], subtracted before dividing by `std`.
        std: Per-channel standard deviation of the images in [0, 1].
        flip: Random horizontal flips in training (not for digits: they are not symmetric).
        augmentation: "pad_crop" (pad `crop_padding` pixels, random crop back to S),
            "resize_crop" (resize to round(S * 8/7), random crop S) or "none".
        native_size: Side of the stored images if fixed, else None (variable or generated).
        has_box: Evaluation batches carry the object's `box` `[b, 4]` in input pixels.
        has_segmentation: Evaluation batches carry a `segmentation` mask `[b, S, S]`.
        manual_files: Files that a manual preparation expects in `config.manual_dir`.
        source: Where the examples come from: "tfds" (`tfds_name`), "generated"
            (cluttered_digits) or "image_folder" (`config.image_folder`).
    """

    name: str
    tfds_name: str | None
    train_split: str
    test_split: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool
    augmentation: Augmentation
    native_size: int | None = None
    has_box: bool = False
    has_segmentation: bool = False
    manual_files: tuple[str, ...] = ()
    source: Source = "tfds"


_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_SVHN_MEAN, _SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# STL-10's labelled training split (5,000 images), as commonly quoted.
_STL10_MEAN, _STL10_STD = (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)
# Measured on 10,000 generated 64x64 training images (a mostly black canvas).
_DIGITS_MEAN, _DIGITS_STD = (0.09, 0.09, 0.09), (0.20, 0.20, 0.20)

DATASETS: Mapping[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="cifar100",
            tfds_name="cifar100",
            train_split="train",
            test_split="test",
            num_classes=100,
            mean=_CIFAR100_MEAN,
            std=_CIFAR100_STD,
            flip=True,
            augmentation="pad_crop",
            native_size=32,
        ),
        DatasetInfo(
            name="cifar10",
            tfds_name="cifar10",
            train_split="train",
            test_split="test",
            num_classes=10,
            mean=_CIFAR10_MEAN,
            std=_CIFAR10_STD,
            flip=True,
            augmentation="pad_crop",
            native_size=32,
        ),
        DatasetInfo(
            name="svhn_cropped",
            tfds_name="svhn_cropped",
            train_split="train",
            test_split="test",
            num_classes=10,
            mean=_SVHN_MEAN,
            std=_SVHN_STD,
            flip=False,  # Digits: a mirrored 2 is not a 2.
            augmentation="pad_crop",
            native_size=32,
        ),
        DatasetInfo(
            name="caltech_birds2011",
            tfds_name="caltech_birds2011",
            train_split="train",
            test_split="test",
            num_classes=200,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            flip=True,
            augmentation="resize_crop",
            has_box=True,
            has_segmentation=True,
            manual_files=("CUB_200_2011.tgz", "segmentations.tgz"),
        ),
        DatasetInfo(
            name="cluttered_digits",
            tfds_name=None,
            train_split="train",
            test_split="test",
            num_classes=cluttered_digits.NUM_CLASSES,
            mean=_DIGITS_MEAN,
            std=_DIGITS_STD,
            flip=False,
            augmentation="none",  # The placement is already random.
            has_box=True,
            source="generated",
        ),
        # The same training split; the test split has target sizes and clutter outside the
        # training range (cluttered_digits.SHIFTED_SPLIT): evaluate a cluttered_digits run here.
        DatasetInfo(
            name="cluttered_digits_shifted",
            tfds_name=None,
            train_split="train",
            test_split=cluttered_digits.SHIFTED_SPLIT,
            num_classes=cluttered_digits.NUM_CLASSES,
            mean=_DIGITS_MEAN,
            std=_DIGITS_STD,
            flip=False,
            augmentation="none",
            has_box=True,
            source="generated",
        ),
        # The paper's cross-domain datasets that TFDS has. STL-10: 96x96, 5,000 labelled
        # training and 8,000 test images (its 100,000 unlabelled ones are not read).
        DatasetInfo(
            name="stl10",
            tfds_name="stl10",
            train_split="train",
            test_split="test",
            num_classes=10,
            mean=_STL10_MEAN,
            std=_STL10_STD,
            flip=True,
            augmentation="pad_crop",
            native_size=96,
        ),
        # Caltech-101: 102 classes (101 and "background_google"), images of varying size;
        # TFDS's "train" split is 30 images per class drawn with a fixed seed (3,060), "test"
        # the rest (6,084): the usual protocol of the dataset.
        DatasetInfo(
            name="caltech101",
            tfds_name="caltech101",
            train_split="train",
            test_split="test",
            num_classes=102,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            flip=True,
            augmentation="resize_crop",
        ),
        # A folder of images (Event-8, Scene-67, Action-40, Caltech-256, Object Discovery, your
        # own): the classes and masks are the folder's (`dataset_info`).
        DatasetInfo(
            name=IMAGE_FOLDER,
            tfds_name=None,
            train_split="train",
            test_split="test",
            num_classes=0,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            flip=True,
            augmentation="resize_crop",
            source="image_folder",
        ),
    )
}


def get_dataset_info(name: str) -> DatasetInfo:
    """Looks a dataset up in `DATASETS`.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
    """
    if name not in DATASETS:
        raise ValueError(
            f"config.dataset={name!r} is not a known dataset; use one of {sorted(DATASETS)}."
        )
    return DATASETS[name]


def dataset_info(config) -> DatasetInfo:
    """The `DatasetInfo` of a config's dataset; for `image_folder`, of its folder.

    For a named dataset this is `get_dataset_info(config.dataset)`. For `image_folder` the
    folder is read (`data.image_folder.from_config`): its number of classes, and
    `has_segmentation` when `config.image_folder_masks` is set.

    Raises:
        ValueError: an unknown dataset, or an image folder that cannot be used (the
            `data.image_folder.ImageFolderError` names the field, the path and the fix).
    """
    info = get_dataset_info(config.dataset)
    if info.source != "image_folder":
        return info
    from ltpa_jax.data import image_folder  # Local: it imports this module.

    return image_folder.from_config(config).dataset_info(info)
