"""A folder of images as a dataset: one sub-folder of images per class, optional masks.

For the paper's datasets that TFDS lacks (Event-8, Scene-67, Action-40, Caltech-256, Object
Discovery) and for a user's own images. `config.dataset = "image_folder"` reads
`config.image_folder`, laid out in one of two ways:

    <image_folder>/train/<class>/<image>    config.image_folder_test_fraction = 0 (default):
    <image_folder>/test/<class>/<image>     the folder's own split; same class folders in both.

    <image_folder>/<class>/<image>          config.image_folder_test_fraction = f in (0, 1]:
                                            round(f * n) of each class's n images are the test
                                            split (at least 1 and at most n - 1 when f < 1 and
                                            n >= 2; f = 1: every image is a test image).

The fixed split sorts each class's files by name and permutes them with a constant seed and the
class name (`SPLIT_SEED`; `config.seed` plays no part), so every run, seed and machine sees the
same test images.

The classes are the sub-folders' names in sorted order (label i = the i-th name). Images are
the files directly in a class folder whose name ends with one of `images.IMAGE_FILE_SUFFIXES`
(any case); hidden files, other files and folders inside a class folder are skipped (so Object
Discovery's `GroundTruth/` inside each class folder is not read as images). Files are decoded
by `images.decode_image_file` (PNG, JPEG, BMP, GIF, WebP; any bit depth, EXIF orientation).

Masks (`config.image_folder_masks`, optional) repeat the image folder's layout under another
folder, one per image with the same relative path and stem and any image suffix:
`<image_folder>/test/horse/0001.jpg` -> `<image_folder_masks>/test/horse/0001.png`. A mask is
read as gray (the largest of its channels); its foreground is the pixels >= 128, or, for a mask
whose values are only 0 and 1 (a label image), the pixels equal to 1. Evaluation batches then
carry "segmentation" `[b, S, S]` in [0, 1], which `ltpa-analyze localization` scores the
thresholded attention maps against (Jaccard index), as the paper's segmentation experiment.

`scan` reads only the folder listing and each file's header (to name an unreadable file before
anything runs); pixels are decoded in the tf.data pipeline (`ImageFolder.read`).

Example:
    >>> folder = scan("/data/event8", test_fraction=0.5)
    >>> folder.class_names, len(folder.split("test").files)
    (('badminton', 'bocce', ...), 790)
"""

import dataclasses
import os
import re
import zlib

import ml_collections
import numpy as np
import tensorflow as tf

from ltpa_jax.data import images
from ltpa_jax.data.registry import DatasetInfo

TRAIN_DIR, TEST_DIR = "train", "test"
SPLIT_SEED = 20180430  # Seeds the fixed per-class split (with the class name); never config.seed.
MASK_FOREGROUND = 128  # Gray mask pixels >= this (of 255) are foreground.

_readable: dict[tuple[str, int, int], None] = {}  # (path, size, mtime) of files already checked.
# What `images.decode_image_file` raises inside tf.data, as TensorFlow reports it.
_DECODE_ERROR = re.compile(r"ValueError: (\S.*?: cannot be decoded as an image \(.*?\)\.)")


class ImageFolderError(ValueError):
    """An image folder (or its masks) that cannot be used; the message names path and fix."""


@dataclasses.dataclass(frozen=True)
class Split:
    """The examples of one split, in order (class by class, files sorted by name).

    Attributes:
        files: Image file paths.
        labels: The class index of each file.
        masks: The mask file of each image, or () when the folder has no masks.
    """

    files: tuple[str, ...]
    labels: tuple[int, ...]
    masks: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.files)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """A scanned image folder: its classes and splits. Make it with `scan` or `from_config`.

    Attributes:
        root: The folder (`config.image_folder`, "~" expanded).
        class_names: The class folders' names, sorted; label i is `class_names[i]`.
        train: The training split.
        test: The test split.
        masks_root: The mask folder, or "" without masks.
    """

    root: str
    class_names: tuple[str, ...]
    train: Split
    test: Split
    masks_root: str = ""

    @property
    def has_masks(self) -> bool:
        return bool(self.masks_root)

    def split(self, name: str) -> Split:
        """The "train" or "test" split."""
        if name not in (TRAIN_DIR, TEST_DIR):
            raise ValueError(f"split={name!r} is not supported; use 'train' or 'test'.")
        return self.train if name == TRAIN_DIR else self.test

    def dataset_info(self, template: DatasetInfo) -> DatasetInfo:
        """`template` (the registry's `image_folder` entry) with this folder's classes and masks."""
        return dataclasses.replace(
            template, num_classes=len(self.class_names), has_segmentation=self.has_masks
        )

    def read(self, split: str, start: int, end: int) -> tf.data.Dataset:
        """Examples `[start, end)` of a split, in order, decoded.

        Returns:
            A dataset of dicts: "image" float32 `[H, W, 3]` in [0, 255] (each file's own size),
            "label" int32 `[]` and, with masks, "segmentation" uint8 `[h, w, 1]`: 255 on the
            foreground, 0 elsewhere.
        """
        part = self.split(split)
        columns = {  # Paths as UTF-8 strings (any file name), decoded back in _decode_*.
            "file": tf.constant(list(part.files[start:end]), tf.string, shape=[end - start]),
            "label": np.asarray(part.labels[start:end], np.int32),
        }
        if self.has_masks:
            columns["mask_file"] = tf.constant(
                list(part.masks[start:end]), tf.string, shape=[end - start]
            )
        ds = tf.data.Dataset.from_tensor_slices(columns)

        def decode(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            image = tf.numpy_function(_decode_image, [example["file"]], tf.float32, stateful=False)
            out = {"image": tf.ensure_shape(image, (None, None, 3)), "label": example["label"]}
            if self.has_masks:
                mask = tf.numpy_function(
                    _decode_mask, [example["mask_file"]], tf.uint8, stateful=False
                )
                out["segmentation"] = tf.ensure_shape(mask, (None, None, 1))
            return out

        return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def decode_error(error: tf.errors.OpError) -> Exception:
    """The error to raise for a tf.data error: an `ImageFolderError` naming the file that could
    not be decoded (a file whose header read but whose pixels do not, e.g. truncated), or
    `error` itself when it is another error."""
    found = _DECODE_ERROR.search(error.message or "")
    if found is None:
        return error
    return ImageFolderError(f"{found.group(1)} Replace or remove the file.")


def _decode_image(path: bytes) -> np.ndarray:
    return images.decode_image_file(path.decode())


def decode_mask(path: str) -> np.ndarray:
    """Reads a mask file as uint8 `[H, W, 1]`: 255 on the foreground, 0 elsewhere.

    The mask is read as gray (the largest of its channels); the foreground is the pixels >=
    `MASK_FOREGROUND` (of 255), or the pixels equal to 1 in a label image of 0s and 1s.

    Raises:
        ValueError: the file cannot be decoded as an image (the message names it).
    """
    gray = images.decode_image_file(path).max(axis=-1)
    threshold = 0.5 if gray.max(initial=0.0) <= 1.0 else MASK_FOREGROUND
    return np.where(gray >= threshold, 255, 0).astype(np.uint8)[..., None]


def _decode_mask(path: bytes) -> np.ndarray:
    return decode_mask(path.decode())


# ---------------------------------------------------------------------------------------------
# Scanning.


def _subfolders(folder: str) -> list[str]:
    """Names of the visible sub-folders of `folder`, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: str) -> list[str]:
    """Names of the visible image files directly in `folder`, sorted."""
    suffixes = images.IMAGE_FILE_SUFFIXES
    with os.scandir(folder) as entries:
        return sorted(
            e.name
            for e in entries
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(suffixes)
        )


def _check_readable(path: str, what: str) -> None:
    """Opens the file's header (Pillow identifies the format); names the file if it fails."""
    from PIL import Image, UnidentifiedImageError  # Local, as in data.images.

    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key in _readable:
        return
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the header is read by open; size proves it parsed.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageFolderError(
            f"{path}: this {what} cannot be read as an image ({error}); replace it with a "
            "readable PNG, JPEG, BMP, GIF or WebP file, or remove it."
        ) from error
    _readable[key] = None


def _class_names(folder: str, field: str) -> list[str]:
    names = _subfolders(folder)
    if not names:
        raise ImageFolderError(
            f"{field}: {folder} holds no class sub-folders; put each class's images in a "
            f"sub-folder named after the class ({folder}/<class>/<image>)."
        )
    return names


def _class_files(folder: str, names: list[str], field: str) -> list[list[str]]:
    """The image files of each class folder under `folder`; each must hold at least one."""
    files = []
    for name in names:
        class_dir = os.path.join(folder, name)
        found = _image_files(class_dir)
        if not found:
            raise ImageFolderError(
                f"{field}: the class folder {class_dir} holds no image files (suffixes "
                f"{images.IMAGE_FILE_SUFFIXES}); add its images or remove the folder."
            )
        files.append([os.path.join(class_dir, f) for f in found])
    return files


def _fixed_split(
    names: list[str], files: list[list[str]], fraction: float
) -> tuple[list[list[str]], list[list[str]]]:
    """Each class's files -> (train, test) by the fixed, seeded per-class split."""
    train, test = [], []
    for name, class_files in zip(names, files, strict=True):
        n = len(class_files)
        num_test = n if fraction >= 1 else int(round(n * fraction))
        if fraction < 1 and n >= 2:
            num_test = min(max(num_test, 1), n - 1)
        seed = [SPLIT_SEED, zlib.crc32(name.encode())]
        order = np.random.default_rng(seed).permutation(n)
        chosen = set(order[:num_test].tolist())
        test.append([f for i, f in enumerate(class_files) if i in chosen])
        train.append([f for i, f in enumerate(class_files) if i not in chosen])
    return train, test


def _masks_of(files: list[str], root: str, masks_root: str, field: str) -> list[str]:
    """The mask file of each image: same relative folder and stem under `masks_root`."""
    listings: dict[str, dict[str, str]] = {}
    masks, missing = [], []
    for path in files:
        relative = os.path.relpath(path, root)
        folder = os.path.join(masks_root, os.path.dirname(relative))
        if folder not in listings:
            by_stem: dict[str, str] = {}
            if os.path.isdir(folder):
                for name in _image_files(folder):
                    by_stem.setdefault(os.path.splitext(name)[0], os.path.join(folder, name))
            listings[folder] = by_stem
        mask = listings[folder].get(os.path.splitext(os.path.basename(path))[0])
        if mask is None:
            missing.append((path, os.path.join(folder, os.path.splitext(relative)[0])))
        masks.append(mask)
    if missing:
        path, expected = missing[0]
        raise ImageFolderError(
            f"{field}={masks_root!r}: {len(missing)} of {len(files)} images have no mask, e.g. "
            f"{path} (expected {os.path.basename(expected)}.png or another image suffix in "
            f"{os.path.dirname(expected)}); every image needs a mask with the same relative "
            "name, or leave config.image_folder_masks empty."
        )
    return masks


def scan(root: str, *, test_fraction: float = 0.0, masks: str = "") -> ImageFolder:
    """Reads an image folder's layout (listing and file headers, no pixels); see the module.

    Args:
        root: The folder (`config.image_folder`); "~" is expanded.
        test_fraction: 0 for the folder's own train/ and test/ sub-folders; in (0, 1] for the
            fixed per-class split of `<root>/<class>/` (`config.image_folder_test_fraction`).
        masks: Optional folder of masks in the same layout (`config.image_folder_masks`).

    Returns:
        The folder's classes and splits (mask files included when `masks` is set).

    Raises:
        ImageFolderError: a missing folder, no class folders, class folders that differ
            between train/ and test/, a class without images, a layout that does not match
            the fraction, an unreadable image or mask, an image without a mask; the message
            names the field, the path and the fix.
    """
    field = f"config.image_folder={root!r}"
    if not root:
        raise ImageFolderError(
            "config.dataset='image_folder' reads config.image_folder, which is empty; set "
            "--config.image_folder=/path/to/folder (one sub-folder of images per class)."
        )
    if not 0.0 <= test_fraction <= 1.0:
        raise ImageFolderError(
            f"config.image_folder_test_fraction={test_fraction!r} must be in [0, 1]: 0 to use "
            "the folder's train/ and test/ sub-folders, e.g. 0.2 to split each class."
        )
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise ImageFolderError(
            f"{field} is not a folder; give the folder that holds the class sub-folders "
            "(or train/ and test/ sub-folders with them)."
        )
    top = _subfolders(root)
    has_train, has_test = TRAIN_DIR in top, TEST_DIR in top
    if test_fraction == 0:
        if not (has_train and has_test):
            present = ((TRAIN_DIR, has_train), (TEST_DIR, has_test))
            lacks = " and ".join(d + "/" for d, has in present if not has)
            raise ImageFolderError(
                f"{field} has no {lacks} sub-folder (it holds {top or 'no folders'}) and "
                "config.image_folder_test_fraction=0 reads train/<class>/ and test/<class>/. "
                "Lay the images out so, or split each class folder of the folder itself by a "
                "fraction: --config.image_folder_test_fraction=0.2."
            )
        names = _class_names(os.path.join(root, TRAIN_DIR), field)
        test_names = _class_names(os.path.join(root, TEST_DIR), field)
        if names != test_names:
            only_train = sorted(set(names) - set(test_names))
            only_test = sorted(set(test_names) - set(names))
            raise ImageFolderError(
                f"{field}: the class folders of train/ and test/ differ (only in train/: "
                f"{only_train or 'none'}; only in test/: {only_test or 'none'}); both splits "
                "need the same class sub-folders (the labels are their sorted names)."
            )
        train = _class_files(os.path.join(root, TRAIN_DIR), names, field)
        test = _class_files(os.path.join(root, TEST_DIR), names, field)
    else:
        if has_train and has_test:
            raise ImageFolderError(
                f"{field} holds train/ and test/ sub-folders, which "
                f"config.image_folder_test_fraction={test_fraction} would read as two classes; "
                "use --config.image_folder_test_fraction=0 to take them as the splits."
            )
        names = _class_names(root, field)
        train, test = _fixed_split(names, _class_files(root, names, field), test_fraction)

    splits = {}
    for split, per_class in ((TRAIN_DIR, train), (TEST_DIR, test)):
        files = [f for class_files in per_class for f in class_files]
        labels = [label for label, class_files in enumerate(per_class) for _ in class_files]
        for path in files:
            _check_readable(path, "image")
        splits[split] = Split(tuple(files), tuple(labels))

    masks_root = ""
    if masks:
        masks_root = os.path.expanduser(masks)
        if not os.path.isdir(masks_root):
            raise ImageFolderError(
                f"config.image_folder_masks={masks!r} is not a folder; give the folder of "
                "masks laid out as config.image_folder, or leave it empty."
            )
        for split, part in splits.items():
            found = _masks_of(list(part.files), root, masks_root, "config.image_folder_masks")
            for path in found:
                _check_readable(path, "mask")
            splits[split] = dataclasses.replace(part, masks=tuple(found))
    return ImageFolder(
        root=root,
        class_names=tuple(names),
        train=splits[TRAIN_DIR],
        test=splits[TEST_DIR],
        masks_root=masks_root,
    )


def from_config(config: ml_collections.ConfigDict) -> ImageFolder:
    """`scan` of `config.image_folder` with the config's fraction and masks."""
    return scan(
        config.image_folder,
        test_fraction=config.image_folder_test_fraction,
        masks=config.image_folder_masks,
    )
