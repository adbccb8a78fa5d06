"""Catalog datasets of the project (thin Kedro adapters over the plain-Python core)."""

from tint_distill.datasets.image_collections import (
    CIFARFSDataset,
    CUBDataset,
    ImageFolderDataset,
    MiniImageNetDataset,
)
from tint_distill.datasets.png_image import PNGFolderDataset, PNGImageDataset
from tint_distill.datasets.resumable_partitions import ResumableImageSetsDataset, ResumablePartitionedDataset
from tint_distill.datasets.tensor_dict import TensorDictDataset
from tint_distill.datasets.tint_artifacts import DiffusersModelDataset, ImageSetDataset, SpecialisationDataset

__all__ = [
    "CIFARFSDataset",
    "CUBDataset",
    "DiffusersModelDataset",
    "ImageFolderDataset",
    "ImageSetDataset",
    "MiniImageNetDataset",
    "PNGFolderDataset",
    "PNGImageDataset",
    "ResumableImageSetsDataset",
    "ResumablePartitionedDataset",
    "SpecialisationDataset",
    "TensorDictDataset",
]
