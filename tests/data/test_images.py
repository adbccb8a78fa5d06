from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tint_distill.data import images as images_module
from tint_distill.data.images import ImageReadError, flatten_to_rgb, read_rgb_image


def test_transparent_drawing_is_flattened_on_white(embedded_root: Path, tmp_path: Path):
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 10, 10))
    path = tmp_path / "half.png"
    rgba.save(path)
    rgb = np.asarray(read_rgb_image(path))
    assert rgb.shape == (10, 20, 3)
    assert (rgb[:, :10] == [255, 0, 0]).all()
    assert (rgb[:, 10:] == 255).all(), "transparent pixels must become white, not black"


def test_palette_with_transparency_and_16_bit_grey():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.paste(1, (0, 0, 2, 4))
    palette.info["transparency"] = 0
    out = np.asarray(flatten_to_rgb(palette))
    assert (out[:, :2] == [10, 200, 30]).all() and (out[:, 2:] == 255).all()

    grey16 = Image.fromarray(np.full((3, 3), 4000, dtype=np.uint16))
    out16 = np.asarray(flatten_to_rgb(grey16))
    assert out16.shape == (3, 3, 3) and out16.max() == 255, "16-bit images are rescaled, not clipped"


def test_max_side_keeps_aspect_and_never_upscales(embedded_root: Path):
    file = next((embedded_root / "fruit").glob("*.png"))
    original = read_rgb_image(file)
    small = read_rgb_image(file, max_side=32)
    assert max(small.size) == 32
    assert abs(small.size[0] / small.size[1] - original.size[0] / original.size[1]) < 0.1
    assert read_rgb_image(file, max_side=4096).size == original.size


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_error_names_the_file(embedded_root: Path, tmp_path: Path, damage: str):
    data = next((embedded_root / "bird").glob("*.png")).read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an image at all")
    with pytest.raises(ImageReadError) as error:
        read_rgb_image(broken)
    message = str(error.value)
    assert str(broken) in message and "\n" not in message


def test_too_large_image_is_refused_before_decoding(tmp_path: Path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300), "white").save(path)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 300 * 299)
    with pytest.raises(ImageReadError, match="too large"):
        read_rgb_image(path)


def _sideways_drawing(path: Path, **save_args) -> None:
    """Stored 40x20 px, red top-left quadrant, blue elsewhere; EXIF Orientation 6 = a viewer
    turns it 90 degrees clockwise, showing 20x40 px with the red quadrant at the top right."""
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, **save_args)


@pytest.mark.parametrize(
    ("suffix", "save_args"),
    [(".jpg", {"quality": 95}), (".png", {}), (".webp", {"lossless": True}), (".tif", {})],
)
def test_exif_orientation_is_applied_as_a_viewer_shows_it(tmp_path: Path, suffix: str, save_args: dict):
    path = tmp_path / f"photo{suffix}"
    _sideways_drawing(path, **save_args)
    with Image.open(path) as stored:
        assert stored.getexif().get(0x0112) == 6
        # PIL turns TIFFs itself (and must not be turned twice); the others come as stored.
        assert stored.size == ((20, 40) if suffix == ".tif" else (40, 20))

    def colour(image: Image.Image, x: float, y: float) -> np.ndarray:  # at fractions of width, height
        pixels = np.asarray(image, dtype=int)
        return pixels[int(y * pixels.shape[0]), int(x * pixels.shape[1])]

    for max_side in (None, 20, 200):
        upright = read_rgb_image(path, max_side=max_side)
        expected_size = (10, 20) if max_side == 20 else (20, 40)
        assert upright.size == expected_size, f"max_side={max_side}"
        assert np.abs(colour(upright, 0.75, 0.25) - [255, 0, 0]).max() < 40, "red quadrant: top right"
        for x, y in ((0.25, 0.25), (0.25, 0.75), (0.75, 0.75)):
            assert np.abs(colour(upright, x, y) - [0, 0, 255]).max() < 40, (x, y, max_side)
    assert images_module.DECODE_VERSION >= 2


def test_grid_labels_draw_non_latin_class_names_readably():
    """PIL's built-in font draws every Cyrillic letter as the same box, so two names looked alike."""
    from tint_distill.data.grids import image_grid

    cell = [Image.new("RGB", (16, 16), "white")]
    first = image_grid([("кот", cell)], cell_size=16)
    second = image_grid([("жук", cell)], cell_size=16)
    assert first.tobytes() != second.tobytes()
