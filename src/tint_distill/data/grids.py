"""Labelled image grids that a person looks at (episode supports, synthetic samples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

from tint_distill.params import Settings

LABEL_WIDTH = 150
PADDING = 4
FONT_SIZE = 11


@dataclass(frozen=True)
class GridSettings(Settings):
    """The ``data_episodes.grids`` block: the support grids drawn for people to look at."""

    n_episodes: int = 3
    cell_size: int = 80


@cache
def label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib: Latin, Cyrillic, Greek, ...) so that any class name
    is readable; PIL's built-in font draws only Latin-1 and shows other names as boxes."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), FONT_SIZE)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def image_grid(
    rows: Sequence[tuple[str, Sequence[Image.Image]]],
    *,
    cell_size: int = 96,
    title: str | None = None,
    gap_after: int | None = None,
) -> Image.Image:
    """One row per ``(label, images)``; each image is fitted into a square cell, and the label
    column is as wide as the longest label (at least ``LABEL_WIDTH``).

    ``gap_after`` draws a wider gap after that many images of each row (to separate, say,
    real supports from the synthetic images beside them).
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    n_columns = max(len(images) for _, images in rows)
    gap = 3 * PADDING if gap_after else 0
    title_height = 22 if title else 0
    label_width = max(LABEL_WIDTH, max(int(label_font().getlength(label)) for label, _ in rows) + 3 * PADDING)
    width = label_width + n_columns * (cell_size + PADDING) + gap + PADDING
    height = title_height + len(rows) * (cell_size + PADDING) + PADDING
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((PADDING, 4), title, fill="black", font=label_font())
    for r, (label, images) in enumerate(rows):
        top = title_height + PADDING + r * (cell_size + PADDING)
        draw.text((PADDING, top + cell_size // 2 - 6), label, fill="black", font=label_font())
        for c, image in enumerate(images):
            left = label_width + c * (cell_size + PADDING) + (gap if gap_after and c >= gap_after else 0)
            fitted = ImageOps.pad(image.convert("RGB"), (cell_size, cell_size), color="white")
            canvas.paste(fitted, (left, top))
            draw.rectangle([left - 1, top - 1, left + cell_size, top + cell_size], outline=(200, 200, 200))
    return canvas
