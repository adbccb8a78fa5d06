"""Reading images safely: any mode, any size, with errors that name the file.

Plain PIL/NumPy, no Kedro. Every loader of the project decodes through
:func:`read_rgb_image`, so odd inputs (palette PNGs, transparency, 16-bit, CMYK,
greyscale, huge drawings, truncated files) behave the same everywhere.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageFile, ImageOps

from tint_distill.errors import UserInputError

# Refuse decompression bombs instead of swapping the machine to death. Some real drawings
# are 13000 x 13000 px (170 M px, 680 MB as RGBA); PIL itself refuses above 179 M px.
MAX_PIXELS = 175_000_000

# Bumped whenever decoding changes what pixels an image file gives (2: EXIF orientation applied),
# so cached results computed from decoded pixels can include it in their fingerprints.
DECODE_VERSION = 2

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ImageReadError(UserInputError, ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image)."""


def flatten_to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Return an RGB image; transparent pixels are composited onto ``background``.

    Drawings (clip art, icons) are usually RGBA with a transparent background:
    converting them straight to RGB would turn the background black.
    """
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bit rather than clipping at 255.
        extrema = image.getextrema()
        high = max(int(extrema[1]), 1)
        return image.point(lambda v: v * 255 / high).convert("L").convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """A copy of ``image`` turned the way viewers show it (EXIF Orientation tag, any format PIL
    reads it from: JPEG, PNG, WebP, TIFF). A malformed EXIF block must not make an otherwise
    readable image fail: then the pixels are returned as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF metadata, not broken pixels
        return image.copy()


def _decode(source: Path | bytes, name: str, max_side: int | None) -> Image.Image:
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check MAX_PIXELS ourselves
            handle = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(handle) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageReadError(
                        f"{name}: {image.width}x{image.height} pixels is too large to decode "
                        f"safely (limit {MAX_PIXELS}); resize it or remove it from the folder."
                    )
                if max_side is not None and image.format == "JPEG":
                    image.draft("RGB", (max_side, max_side))  # cheap JPEG downscale while decoding
                image.load()
                return _upright(image)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        detail = type(error).__name__
        if isinstance(source, bytes) or str(source) not in str(error):  # PIL often repeats the path
            detail += f": {error}"
        raise ImageReadError(f"{name}: cannot decode image ({detail}); replace or delete this file.") from error


def _short_path(path: Path) -> str:
    """The path relative to the working directory (the project root) when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_rgb_image(
    source: str | Path | bytes, *, name: str | None = None, max_side: int | None = None
) -> Image.Image:
    """Decode ``source`` (a path or encoded bytes) into an RGB image.

    ``max_side`` bounds the longer side (aspect ratio kept, never upscaled). Raises
    :class:`ImageReadError` with the file name in the message for undecodable data.
    """
    label = name or ("<bytes>" if isinstance(source, bytes) else _short_path(Path(source)))
    image = _decode(Path(source) if isinstance(source, str) else source, label, max_side)
    rgb = flatten_to_rgb(image)
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
