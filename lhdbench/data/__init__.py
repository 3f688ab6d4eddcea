"""Datasets: their specs (classes, normalization) and, later, the GPU-resident batch stream."""

from .specs import DATASETS, DatasetSpec, get_dataset

__all__ = ["DATASETS", "DatasetSpec", "get_dataset"]
