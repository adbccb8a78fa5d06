"""A lazily decoded, labelled image collection: the common shape of every data source.

Each source (a class-per-folder tree, miniImageNet, CUB-200-2011, CIFAR-FS) becomes an
:class:`ImageCollection`: an index table with one row per image and a reader that
decodes one image on demand. Nothing is decoded when a collection is built.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image

from tint_distill.data.images import DECODE_VERSION, ImageReadError, read_rgb_image
from tint_distill.data.model_input import MODEL_INPUT_VERSION

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ["image_id", "class_name", "split", "source"]
SPLITS = ("base", "val", "novel")


class ImageReader(Protocol):
    def read(self, source: str, image_id: str, max_side: int | None) -> Image.Image: ...

    def content_hash(self, source: str) -> str: ...


def _sha256(chunks) -> str:
    # what a model sees of a file: its bytes, how they are decoded and the one image policy
    digest = hashlib.sha256(f"decode-v{DECODE_VERSION}:input-v{MODEL_INPUT_VERSION}:".encode())
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FileReader:
    """Reads images stored as files below ``root``; ``source`` is the path relative to it."""

    root: str

    def read(self, source: str, image_id: str, max_side: int | None) -> Image.Image:
        path = Path(self.root) / source
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image listed for '{image_id}' does not exist.")
        return read_rgb_image(path, max_side=max_side)

    def content_hash(self, source: str) -> str:
        """SHA-256 of the file's bytes (and of the decoder's version)."""
        path = Path(self.root) / source
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image file does not exist.")
        with path.open("rb") as handle:
            return _sha256(iter(lambda: handle.read(1 << 20), b""))


@dataclass
class PickledArrayReader:
    """Reads images stored as rows of uint8 arrays in pickled batches (the CIFAR format).

    ``source`` is ``"<batch file>#<row>"``. Each batch is unpickled once, on first use.
    """

    root: str
    image_shape: tuple[int, int, int] = (3, 32, 32)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def read(self, source: str, image_id: str, max_side: int | None) -> Image.Image:
        batch, row = source.rsplit("#", 1)
        if batch not in self._cache:
            self._cache[batch] = load_cifar_batch(Path(self.root) / batch)[b"data"]
        pixels = self._cache[batch][int(row)].reshape(self.image_shape).transpose(1, 2, 0)
        image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
        if max_side is not None and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return image

    def content_hash(self, source: str) -> str:
        """SHA-256 of the image's row of pixels in its batch."""
        batch, row = source.rsplit("#", 1)
        if batch not in self._cache:
            self._cache[batch] = load_cifar_batch(Path(self.root) / batch)[b"data"]
        return _sha256([self._cache[batch][int(row)].tobytes()])

    def __getstate__(self) -> dict:  # do not ship decoded batches to worker processes
        return {"root": self.root, "image_shape": self.image_shape, "_cache": {}}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what the official CIFAR python release holds (dicts, lists, bytes, numbers and
    NumPy arrays) and nothing else: a pickle naming any other global (a crafted file that would
    run code while it loads) is refused before that global is even imported."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # arrays at protocol 5
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it names the global '{module}.{name}', which the CIFAR format never holds (only arrays, lists "
                "and numbers); refused, as loading it could run code")
        return super().find_class(module, name)


def load_cifar_batch(path: Path) -> dict:
    """Unpickle one batch file of the official CIFAR python release, allowing only its data types."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: CIFAR batch file not found; expected the official 'cifar-100-python' release."
        )
    with path.open("rb") as handle:
        try:
            return _CifarUnpickler(handle, encoding="bytes").load()
        except Exception as error:
            raise ImageReadError(f"{path}: cannot unpickle CIFAR batch ({error}). Use the official "
                                 "'cifar-100-python' files.") from error


class ImageCollection:
    """Labelled images with a table of what exists and lazy decoding of each image.

    ``index`` has the columns ``image_id`` (unique, stable across runs), ``class_name``,
    ``split`` (``base``/``val``/``novel`` when the source defines it, else missing) and
    ``source`` (where the reader finds the pixels).
    """

    def __init__(self, index: pd.DataFrame, reader: ImageReader, description: str, max_side: int | None = None):
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise ValueError(f"image index of {description} lacks columns {missing}")
        if index["image_id"].duplicated().any():
            duplicate = index.loc[index["image_id"].duplicated(), "image_id"].iloc[0]
            raise ValueError(f"{description}: image id '{duplicate}' occurs more than once")
        self.index = index[INDEX_COLUMNS].sort_values("image_id", kind="stable").reset_index(drop=True)
        self.reader = reader
        self.description = description
        self.max_side = max_side
        self._sources = dict(zip(self.index["image_id"], self.index["source"]))
        self._hashes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"ImageCollection({self.description!r}, {len(self)} images, "
            f"{self.index['class_name'].nunique()} classes)"
        )

    def load(self, image_id: str) -> Image.Image:
        """Decode one image as RGB (errors name the file)."""
        try:
            source = self._sources[image_id]
        except KeyError:
            raise KeyError(f"{self.description}: no image with id '{image_id}'") from None
        return self.reader.read(source, image_id, self.max_side)

    def content_hash(self, image_id: str) -> str:
        """A hash of the image's stored content: results computed from an image include it in their
        fingerprints, so an image overwritten with other pixels under the same name is noticed.
        Computed once per image and collection."""
        if image_id not in self._hashes:
            try:
                source = self._sources[image_id]
            except KeyError:
                raise KeyError(f"{self.description}: no image with id '{image_id}'") from None
            self._hashes[image_id] = self.reader.content_hash(source)
        return self._hashes[image_id]

    def content_hashes(self, image_ids) -> list[str]:
        return [self.content_hash(i) for i in image_ids]

    def location(self, image_id: str) -> str:
        """Human-readable place of an image, for error messages."""
        root = getattr(self.reader, "root", "")
        return str(Path(root) / self._sources[image_id]) if root else self._sources[image_id]

    def with_index(self, index: pd.DataFrame) -> ImageCollection:
        """The same images and reader with a new index (for example with splits filled in)."""
        return ImageCollection(index, self.reader, self.description, self.max_side)


def check_decodable(images: ImageCollection, image_ids, min_side: int, progress_every: int = 500) -> list[tuple[int, int]]:
    """Decode every image of ``image_ids`` fully and return their sizes; raise one
    :class:`ImageReadError` listing all the files that cannot be decoded or whose shorter side is
    below ``min_side`` pixels (icons, tracking pixels), so a run stops before any work, with the fix.
    The one check of the experiment's and the task's images."""
    image_ids = list(image_ids)
    sizes, unreadable, tiny = [], [], []
    for done, image_id in enumerate(image_ids, start=1):
        try:
            size = images.load(image_id).size
        except (ImageReadError, OSError) as error:
            location, message = str(images.location(image_id)), str(error)
            unreadable.append(message if message.startswith(location) else f"{location}: {message}")
            size = (0, 0)
        else:
            if min(size) < min_side:
                tiny.append(f"{images.location(image_id)} ({size[0]}x{size[1]} px)")
        sizes.append(size)
        if done % progress_every == 0:
            logger.info("Checked %d / %d images", done, len(image_ids))
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} image(s) cannot be read; fix or remove them:\n  " + "\n  ".join(unreadable))
    if tiny:
        listed = "; ".join(tiny[:10]) + (f" and {len(tiny) - 10} more" if len(tiny) > 10 else "")
        problems.append(f"{len(tiny)} image(s) have a side shorter than {min_side} px: {listed}. Delete or enlarge "
                        "them, or lower 'data_episodes.min_image_side'.")
    if problems:
        raise ImageReadError("\n".join(problems))
    return sizes
