"""Catalog datasets of the project (thin Kedro adapters over the plain-Python core)."""

from tint_distill.datasets.image_collections import (
    CIFARFSDataset,
    CUBDataset,
    ImageFilesDataset,
    ImageFolderDataset,
    MiniImageNetDataset,
    TaskFolderDataset,
)
from tint_distill.datasets.mlflow_models import LoggableModel, MlflowModelWithSignatureDataset
from tint_distill.datasets.mlflow_tags import MlflowTagsDataset
from tint_distill.datasets.png_image import MatplotlibPNGDataset, PNGFolderDataset, PNGImageDataset
from tint_distill.datasets.resumable_partitions import ResumableImageSetsDataset, ResumablePartitionedDataset
from tint_distill.datasets.student_checkpoint import StudentCheckpointDataset
from tint_distill.datasets.student_results import StudentResultDataset
from tint_distill.datasets.tensor_dict import TensorDictDataset
from tint_distill.datasets.tint_artifacts import DiffusersModelDataset, ImageSetDataset, SpecialisationDataset

__all__ = [
    "CIFARFSDataset",
    "CUBDataset",
    "DiffusersModelDataset",
    "ImageFilesDataset",
    "ImageFolderDataset",
    "LoggableModel",
    "MatplotlibPNGDataset",
    "MlflowModelWithSignatureDataset",
    "MlflowTagsDataset",
    "ImageSetDataset",
    "MiniImageNetDataset",
    "PNGFolderDataset",
    "PNGImageDataset",
    "ResumableImageSetsDataset",
    "ResumablePartitionedDataset",
    "SpecialisationDataset",
    "StudentCheckpointDataset",
    "StudentResultDataset",
    "TaskFolderDataset",
    "TensorDictDataset",
]
