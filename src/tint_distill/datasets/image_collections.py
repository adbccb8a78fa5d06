"""Read-only catalog datasets that expose an image source as a lazy :class:`ImageCollection`.

Catalog example::

    raw_images:
      type: tint_distill.datasets.ImageFolderDataset
      path: data/01_raw/openclipart
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from tint_distill.data import sources, task
from tint_distill.data.collection import ImageCollection
from tint_distill.datasets.folder_size import FolderSize


class _ImageCollectionDataset(FolderSize, AbstractDataset[None, ImageCollection]):
    """Common behaviour: lists the source on load, decodes nothing, cannot be saved."""

    builder: Any = None

    def __init__(self, *, path: str, max_side: int | None = None, metadata: dict | None = None, **options: Any):
        self._path = Path(path)
        self._max_side = max_side
        self._options = options
        self.metadata = metadata

    def load(self) -> ImageCollection:
        try:
            return type(self).builder(self._path, max_side=self._max_side, **self._options)
        except PermissionError as error:  # a folder or file of the user's that this user cannot read
            raise sources.DataLayoutError(f"{error.filename or self._path}: cannot be read ({error.strerror}); "
                                          "check its permissions.") from error

    def save(self, data: ImageCollection) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only: raw images are never overwritten.")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "max_side": self._max_side, **self._options}


class ImageFolderDataset(_ImageCollectionDataset):
    """``path/<class>/<image>``; class splits come from ``data_episodes.class_splits``."""

    builder = staticmethod(sources.image_folder)


class MiniImageNetDataset(_ImageCollectionDataset):
    """miniImageNet: ``path/{train,val,test}.csv`` (Ravi & Larochelle) and ``path/images/``."""

    builder = staticmethod(sources.mini_imagenet)


class CUBDataset(_ImageCollectionDataset):
    """CUB-200-2011: the official ``CUB_200_2011`` folder; optional ``class_splits``
    (else the split of Chen et al. 2019)."""

    builder = staticmethod(sources.cub_200_2011)


class CIFARFSDataset(_ImageCollectionDataset):
    """CIFAR-FS: ``path/cifar-100-python/`` and ``path/<split_dir>/{train,val,test}.txt``."""

    builder = staticmethod(sources.cifar_fs)


class TaskFolderDataset(_ImageCollectionDataset):
    """A user's task: ``path/<class>/<image>`` labelled images, optional test images in
    ``path/test/<class>/<image>`` (``test_folder``), unlabeled ones below ``path/unlabeled/``
    (``unlabeled_folder``) and other classes of the domain in ``path/base/<class>/<image>``
    (``base_folder``) (:mod:`tint_distill.data.task`)."""

    builder = staticmethod(task.task_folder)


class ImageFilesDataset(FolderSize, AbstractDataset[None, list]):
    """Every file below ``path`` (recursively, hidden ones left out), sorted, as paths: nothing is
    decoded, so that a file that cannot be read is reported by whoever reads it instead of stopping
    the load (the ``predict`` pipeline lists such files with the reason)."""

    def __init__(self, *, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> list[Path]:
        if not self._path.is_dir():
            raise sources.DataLayoutError(f"{self._path}: folder of images to classify not found; pass yours with "
                                          "--params predict_path=/path/to/images.")
        try:
            files = sorted(p for p in self._path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(self._path).parts))
        except PermissionError as error:
            raise sources.DataLayoutError(f"{error.filename or self._path}: cannot be read ({error.strerror}); "
                                          "check its permissions.") from error
        if not files:
            raise sources.DataLayoutError(f"{self._path}: no files to classify in this folder; pass the folder of "
                                          "your images with --params predict_path=/path/to/images.")
        return files

    def save(self, data: list) -> None:
        raise DatasetError("ImageFilesDataset is read-only: the images to classify are never overwritten.")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
