import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dino_demo.io.images import ImageError, load_image


def _png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=params.pop("format", "PNG"), **params)
    return buffer.getvalue()


def _rgb(h=12, w=16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_file_is_read_exactly(tmp_path):
    array = _rgb()
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.array, array)
    assert loaded.notes == () and loaded.file_size == (12, 16) and loaded.scale == 1.0


@pytest.mark.parametrize("mode", ["L", "1", "P"])
def test_grayscale_bilevel_and_palette_become_rgb(mode):
    image = Image.fromarray(_rgb()).convert(mode)
    loaded = load_image(_png_bytes(image))
    assert loaded.array.shape == (12, 16, 3) and loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, np.asarray(image.convert("RGB")))


def test_alpha_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half fully transparent
    loaded = load_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    assert tuple(loaded.array[0, 0]) == (200, 0, 0)
    assert tuple(loaded.array[9, 9]) == (255, 255, 255)
    assert any("transparent" in note for note in loaded.notes)


def test_palette_with_transparency():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([10, 20, 30, 250, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 5, 10))
    image.info["transparency"] = 0
    loaded = load_image(_png_bytes(image, transparency=0))
    assert tuple(loaded.array[0, 0]) == (250, 0, 0)
    assert tuple(loaded.array[0, 9]) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_to_8_bit():
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    image = Image.fromarray(values)  # mode I;16
    loaded = load_image(_png_bytes(image))
    assert loaded.array.shape == (16, 16, 3)
    assert loaded.array[0, 0, 0] == 0 and loaded.array[0, 8, 1] == 100
    assert loaded.array[8, 0, 2] == 255 and loaded.array[8, 8, 0] == 7
    assert any("16-bit" in note or "integer" in note for note in loaded.notes)


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    loaded = load_image(_png_bytes(image, format="JPEG", quality=95))
    r, g, b = (int(c) for c in loaded.array[8, 8])
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK" in note for note in loaded.notes)


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10] = 255  # white band on the left of the stored image
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    loaded = load_image(_png_bytes(image, format="JPEG", exif=exif.tobytes(), quality=100))
    assert loaded.array.shape == (40, 20, 3)
    # The stored left band ends up at the top after a clockwise rotation.
    assert loaded.array[2, 10].mean() > 200 and loaded.array[35, 10].mean() < 50
    assert any("EXIF" in note for note in loaded.notes)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(buffer.getvalue())
    assert loaded.array[5, 5, 0] > 200 and loaded.array[5, 5, 2] < 50
    assert any("first frame" in note for note in loaded.notes)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"%PDF-1.4\n" + b"x" * 100])
def test_non_images_are_refused(data):
    with pytest.raises(ImageError, match="not an image"):
        load_image(data)


def test_truncated_file_is_refused():
    data = _png_bytes(Image.fromarray(_rgb(64, 64)))
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(data[: len(data) // 2])


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but holds (almost) no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 5_000)])
def test_decompression_bombs_are_refused_before_decoding(size):
    with pytest.raises(ImageError, match="too large|megapixels"):
        load_image(_png_header_only(*size))


def test_pixel_cap_is_configurable():
    with pytest.raises(ImageError, match="megapixels"):
        load_image(_rgb(40, 40), max_pixels=1000)


def test_tiny_images_are_refused_with_a_message():
    with pytest.raises(ImageError, match="at least 8 pixels"):
        load_image(_rgb(4, 30))
    assert load_image(_rgb(8, 8)).array.shape == (8, 8, 3)


def test_large_images_are_downscaled_with_a_note():
    loaded = load_image(_rgb(100, 300), max_side=150)
    assert loaded.array.shape == (50, 150, 3)
    assert loaded.file_size == (100, 300) and loaded.scale == pytest.approx(2.0)
    assert any("downscaled" in note for note in loaded.notes)


def test_arrays_of_other_dtypes():
    gray16 = np.full((10, 10), 257 * 9, np.uint16)
    assert load_image(gray16).array[0, 0].tolist() == [9, 9, 9]
    unit_float = np.full((10, 10, 3), 0.5, np.float32)
    assert load_image(unit_float).array[0, 0].tolist() == [128, 128, 128]
    single_channel = np.full((10, 10, 1), 3, np.uint8)
    assert load_image(single_channel).array[0, 0].tolist() == [3, 3, 3]
    with pytest.raises(ImageError):
        load_image(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((10, 10), np.nan, np.float32))


def test_a_refused_thin_image_is_described_as_uploaded():
    with pytest.raises(ImageError, match="10000x10 pixels: its aspect ratio is too extreme"):
        load_image(np.zeros((10, 10000, 3), np.uint8), max_side=4096)
