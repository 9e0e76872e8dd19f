"""Image files as model inputs: the same pixels whatever the file's format.

`decode_image_file` reads any PNG, JPEG, BMP, GIF or WebP to float32 RGB pixels in [0, 255]:

- PNG, 8- or 16-bit, grayscale, palette or RGB(A), is decoded at 16 bits (libpng through
  `tf.io.decode_png`) and scaled by 255 / 65535, never clipped: a 16-bit picture whose values
  are its 8-bit version times 257 gives exactly the 8-bit pixels. (Pillow clips 16-bit
  grayscale to 255 on `convert("RGB")` and keeps only the high byte of 16-bit RGB.)
- Other formats go through Pillow: `convert("RGB")` for palette, grayscale, CMYK (JPEG's
  Adobe inversion handled by Pillow) and the rest; 16/32-bit grayscale ("I;16", "I") is scaled
  by 255 / 65535 like a 16-bit PNG.
- Alpha (RGBA, LA, a palette's transparency) is dropped, as `PIL.Image.convert("RGB")` does:
  the colour under a transparent pixel is kept, nothing is composited.
- The EXIF orientation is applied (as `PIL.ImageOps.exif_transpose` does), so a photo rotated
  by its camera tag comes out upright.

`load_image_file` then resizes to the model's input like the evaluation pipeline and
normalises with the dataset's mean and std.
"""

import numpy as np
import tensorflow as tf

from ltpa_jax.data import transforms
from ltpa_jax.data.registry import DatasetInfo

IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_DIVISOR = 257.0  # 0..65535 -> 0..255; a division, so v * 257 -> v exactly.


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1-8) to `[H, W, C]`, like `ImageOps.exif_transpose`."""
    transposed = pixels.transpose(1, 0, 2)
    return {
        2: lambda: pixels[:, ::-1],  # Mirrored.
        3: lambda: pixels[::-1, ::-1],  # Rotated 180.
        4: lambda: pixels[::-1],  # Mirrored vertically.
        5: lambda: transposed,  # Mirrored along the main diagonal.
        6: lambda: transposed[:, ::-1],  # Rotated 90 clockwise to be upright.
        7: lambda: transposed[::-1, ::-1],  # Mirrored along the other diagonal.
        8: lambda: transposed[::-1],  # Rotated 90 counter-clockwise to be upright.
    }.get(orientation, lambda: pixels)()


def _decode_with_pil(image) -> np.ndarray:
    """A decoded Pillow image (not PNG) -> float32 `[H, W, 3]` in [0, 255], not yet oriented."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        gray = np.asarray(image, dtype=np.float32) / np.float32(_SIXTEEN_BIT_DIVISOR)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def decode_image_file(path: str) -> np.ndarray:
    """Reads an image file to RGB pixels, whatever its bit depth, colour mode or orientation.

    Args:
        path: A PNG, JPEG, BMP, GIF or WebP file (Pillow identifies the format by its content).

    Returns:
        float32 `[H, W, 3]` in [0, 255] (fractional for 16-bit sources), upright.

    Raises:
        ValueError: the file cannot be decoded as an image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError  # Local: only the analysis tools need it.

    try:
        with Image.open(path) as image:
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
            if image.format == "PNG":
                with open(path, "rb") as f:
                    contents = f.read()
                pixels = tf.io.decode_png(contents, channels=3, dtype=tf.uint16).numpy()
                pixels = pixels.astype(np.float32) / np.float32(_SIXTEEN_BIT_DIVISOR)
            else:
                pixels = _decode_with_pil(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot be decoded as an image ({error}).") from error
    except tf.errors.OpError as error:
        raise ValueError(f"{path}: cannot be decoded as an image ({error.message}).") from error
    return np.ascontiguousarray(_orient(pixels, orientation))


def load_image_file(path: str, info: DatasetInfo, image_size: int) -> np.ndarray:
    """Reads an ordinary image file (any size) as the model's input, like the eval transform.

    The image is decoded by `decode_image_file`, resized straight to `image_size` (bilinear,
    antialiased, as CUB's evaluation images are; pixels rounded like the resized TFDS images)
    and normalised with the dataset's mean and std.

    Returns:
        float32 `[S, S, 3]`.

    Raises:
        ValueError: the file cannot be decoded as an image (the message names it).
    """
    pixels = decode_image_file(path)
    if pixels.shape[:2] != (image_size, image_size):
        resized = transforms.resize(tf.constant(pixels), image_size)
        if info.augmentation != "resize_crop":
            resized = transforms.to_uint8(resized)
        pixels = resized.numpy()
    return transforms.normalize(tf.constant(pixels), info).numpy()
