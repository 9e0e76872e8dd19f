"""Image files as model inputs: every format gives the pixels of the same picture.

Each case is written in tmp_path from one RGB picture of flat 16x16 blocks (so that JPEG's
8x8 blocks are flat and come back within one level) and decoded back.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from ltpa_jax import data
from ltpa_jax.data import images

HEIGHT, WIDTH, BLOCK = 48, 64, 16  # Not square: a wrong rotation changes the shape.


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """uint8 `[48, 64, 3]`: 12 flat blocks of distinct random colours."""
    colours = np.random.default_rng(0).integers(0, 256, (HEIGHT // BLOCK, WIDTH // BLOCK, 3))
    return np.repeat(np.repeat(colours, BLOCK, 0), BLOCK, 1).astype(np.uint8)


def gray_of(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 1]


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (Pillow cannot write 16-bit RGB): `[H, W, C]` uint16."""
    path.write_bytes(tf.io.encode_png(tf.constant(pixels, tf.uint16)).numpy())


def decode(path: Path) -> np.ndarray:
    return images.decode_image_file(str(path))


def test_8_bit_rgb_png_is_exact(rgb, tmp_path):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = decode(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, rgb)


def test_16_bit_rgb_png_scales_to_the_8_bit_pixels(rgb, tmp_path):
    write_png16(tmp_path / "a.png", rgb.astype(np.uint16) * 257)
    assert Image.open(tmp_path / "a.png").mode == "RGB"  # Pillow would keep the high byte.
    np.testing.assert_array_equal(decode(tmp_path / "a.png"), rgb)


def test_16_bit_png_is_scaled_not_clipped_nor_truncated(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)
    write_png16(tmp_path / "gray.png", values[..., None])
    write_png16(tmp_path / "rgb.png", np.repeat(values[..., None], 3, -1))
    expected = values.astype(np.float32) / 257
    for name in ("gray.png", "rgb.png"):
        out = decode(tmp_path / name)
        np.testing.assert_allclose(out, np.repeat(expected[..., None], 3, -1), rtol=1e-6)


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_grayscale_png_repeats_the_gray_level(mode, rgb, tmp_path):
    gray = gray_of(rgb)
    if mode == "L":
        Image.fromarray(gray).save(tmp_path / "a.png")
    else:
        write_png16(tmp_path / "a.png", gray[..., None].astype(np.uint16) * 257)
        assert Image.open(tmp_path / "a.png").mode == "I;16"
    np.testing.assert_array_equal(decode(tmp_path / "a.png"), np.repeat(gray[..., None], 3, -1))


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_and_32_bit_grayscale_through_pillow(mode, rgb, tmp_path):
    gray = gray_of(rgb).astype(np.uint16) * 257
    image = Image.fromarray(gray) if mode == "I;16" else Image.fromarray(gray.astype(np.int32))
    assert image.mode == mode
    image.save(tmp_path / "a.tif")
    expected = np.repeat(gray_of(rgb)[..., None], 3, -1)
    np.testing.assert_array_equal(decode(tmp_path / "a.tif"), expected)


def _palette_image(rgb: np.ndarray) -> Image.Image:
    colours, indices = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    image = Image.fromarray(indices.reshape(rgb.shape[:2]).astype(np.uint8), "P")
    image.putpalette(colours.astype(np.uint8).tobytes())
    image.info["transparency"] = 0  # The first colour is transparent: alpha is dropped.
    return image


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_palette_with_transparency_gives_the_palette_colours(suffix, rgb, tmp_path):
    path = tmp_path / f"a.{suffix}"
    _palette_image(rgb).save(path, transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    np.testing.assert_array_equal(decode(path), rgb)


@pytest.mark.parametrize("suffix", ["png", "webp"])
def test_alpha_is_dropped(suffix, rgb, tmp_path):
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    rgba = Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA")
    rgba.save(tmp_path / f"rgba.{suffix}", lossless=True)
    np.testing.assert_array_equal(decode(tmp_path / f"rgba.{suffix}"), rgb)
    gray = gray_of(rgb)
    Image.fromarray(np.stack([gray, alpha], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(decode(tmp_path / "la.png"), np.repeat(gray[..., None], 3, -1))


def test_jpeg_rgb_and_cmyk_within_one_level(rgb, tmp_path):
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=100, subsampling=0)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    for name in ("rgb.jpg", "cmyk.jpg"):
        out = decode(tmp_path / name)
        assert out.shape == rgb.shape
        np.testing.assert_allclose(out, rgb, atol=1, err_msg=name)


def _stored_for(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for an upright `rgb` under an EXIF orientation."""
    stored = {
        1: rgb,
        2: rgb[:, ::-1],
        3: rgb[::-1, ::-1],
        4: rgb[::-1],
        5: rgb.transpose(1, 0, 2),
        6: np.rot90(rgb, 1),  # Displayed after a quarter turn clockwise.
        7: rgb[::-1, ::-1].transpose(1, 0, 2),
        8: np.rot90(rgb, -1),  # Displayed after a quarter turn counter-clockwise.
    }[orientation]
    return np.ascontiguousarray(stored)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(orientation, rgb, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(_stored_for(rgb, orientation))
    stored.save(tmp_path / "a.png", exif=exif)
    stored.save(tmp_path / "a.jpg", exif=exif, quality=100, subsampling=0)
    np.testing.assert_array_equal(decode(tmp_path / "a.png"), rgb)
    with Image.open(tmp_path / "a.png") as image:
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(image)), rgb)
    np.testing.assert_allclose(decode(tmp_path / "a.jpg"), rgb, atol=1)


@pytest.mark.parametrize(("dataset", "size"), [("cifar10", 32), ("caltech_birds2011", 64)])
def test_16_bit_and_8_bit_png_give_the_same_model_input(dataset, size, rgb, tmp_path):
    info = data.get_dataset_info(dataset)
    Image.fromarray(rgb).save(tmp_path / "8.png")
    write_png16(tmp_path / "16.png", rgb.astype(np.uint16) * 257)
    write_png16(tmp_path / "gray16.png", gray_of(rgb)[..., None].astype(np.uint16) * 257)
    Image.fromarray(gray_of(rgb)).save(tmp_path / "gray8.png")
    for a, b in [("8.png", "16.png"), ("gray8.png", "gray16.png")]:
        x = images.load_image_file(str(tmp_path / a), info, size)
        y = images.load_image_file(str(tmp_path / b), info, size)
        assert x.shape == (size, size, 3) and x.dtype == np.float32
        np.testing.assert_array_equal(x, y)


def test_load_image_file_resizes_and_normalises(rgb, tmp_path):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    info = data.get_dataset_info("cifar10")
    out = images.load_image_file(str(tmp_path / "a.png"), info, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    pixels = np.rint(data.transforms.denormalize(out, info) * 255)
    # Each 16x16 block becomes an 8x12 one; block centres keep their colour.
    np.testing.assert_allclose(pixels[4, 6], rgb[8, 8], atol=1)
    Image.fromarray(rgb[:32, :32]).save(tmp_path / "b.png")  # Already 32x32: not resized.
    out = images.load_image_file(str(tmp_path / "b.png"), info, 32)
    np.testing.assert_allclose(
        data.transforms.denormalize(out, info) * 255, rgb[:32, :32], atol=1e-3
    )


@pytest.mark.parametrize("content", [b"not an image", b"truncated"])
def test_undecodable_file_raises_value_error_naming_it(content, rgb, tmp_path):
    path = tmp_path / "bad.png"
    if content == b"truncated":
        Image.fromarray(rgb).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}: cannot be decoded as an image"):
        decode(path)


def test_suffixes():
    assert {".png", ".jpg", ".jpeg"} <= set(data.IMAGE_FILE_SUFFIXES)
