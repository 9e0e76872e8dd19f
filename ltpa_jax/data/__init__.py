"""Data: the dataset registry, the cluttered digits, transforms, image files and the pipeline."""

from ltpa_jax.data.registry import DATASETS, DatasetInfo, get_dataset_info

__all__ = ["DATASETS", "DatasetInfo", "get_dataset_info"]
