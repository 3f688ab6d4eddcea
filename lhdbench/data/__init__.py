"""Datasets: their specs (classes, normalization), loading them as uint8 tensors, and the GPU-resident
batch stream with on-device augmentation. See docs/data.md."""

from .sources import DatasetUnavailable, ImageSet, data_root, load_images, search_split
from .specs import DATASETS, DatasetSpec, get_dataset
from .stream import GpuBatchStream

__all__ = ["DATASETS", "DatasetSpec", "DatasetUnavailable", "GpuBatchStream", "ImageSet", "data_root",
           "get_dataset", "load_images", "search_split"]
