"""Kedro-Viz image previews: sharp and uncropped when "Expand preview" enlarges them."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tint_distill.datasets.png_image import PREVIEW_MAX_ASPECT, PREVIEW_MIN_HEIGHT, png_preview


def decoded(preview: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(preview)))


def test_a_wide_grid_is_enlarged_pixel_for_pixel_with_margins_instead_of_cropped_sides():
    cells = np.random.default_rng(0).integers(0, 256, (19, 57, 3), dtype=np.uint8)
    pixels = cells.repeat(10, 0).repeat(10, 1)  # a 570 px grid of 10 px cells, 3:1
    pixels[0, 0] = 255  # its white border is the margins' colour
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")

    preview = decoded(png_preview(buffer.getvalue()))
    assert preview.height >= PREVIEW_MIN_HEIGHT and preview.width / preview.height <= PREVIEW_MAX_ASPECT
    factor = preview.width // 570
    assert factor >= 2 and preview.width == 570 * factor
    enlarged = np.asarray(preview.convert("RGB"))
    top = (preview.height - 190 * factor) // 2
    grid = enlarged[top:top + 190 * factor]
    assert (grid == pixels.repeat(factor, 0).repeat(factor, 1)).all(), "every pixel a sharp block, none blurred"
    assert (enlarged[:top] == 255).all() and (enlarged[top + 190 * factor:] == 255).all(), "white margins"


def test_a_tall_image_is_kept_as_it_is():
    image = Image.new("RGB", (290, 1114), "white")
    preview = decoded(png_preview(image))
    assert preview.size == (290, 1114)
