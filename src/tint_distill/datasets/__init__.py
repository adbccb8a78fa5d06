"""Catalog datasets of the project (thin Kedro adapters over ``tint_distill.data``)."""

from tint_distill.datasets.image_collections import (
    CIFARFSDataset,
    CUBDataset,
    ImageFolderDataset,
    MiniImageNetDataset,
)
from tint_distill.datasets.png_image import PNGImageDataset

__all__ = ["CIFARFSDataset", "CUBDataset", "ImageFolderDataset", "MiniImageNetDataset", "PNGImageDataset"]
