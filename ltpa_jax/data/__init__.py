"""Data: the dataset registry, transforms, image files, availability and the pipeline object.

    >>> from ltpa_jax import data
    >>> pipeline = data.Pipeline.from_config(config)  # Once; raises DatasetNotFoundError.
    >>> batches = pipeline.train_batches(start_step)
    >>> for batch in pipeline.eval_batches("test"): ...

Modules, one job each: `registry` (DatasetInfo, DATASETS), `cluttered_digits` (the offline
dataset), `image_folder` (a folder of images, one sub-folder per class, optional masks),
`transforms` (per-example tf.data transforms), `images` (image files as inputs), `prepare`
(availability check and the explicit preparation), `pipeline` (the object and its streams,
host slices, global arrays).
"""

from ltpa_jax.data.image_folder import ImageFolder, ImageFolderError
from ltpa_jax.data.images import IMAGE_FILE_SUFFIXES
from ltpa_jax.data.pipeline import Batch, Pipeline, host_range, shard_batch
from ltpa_jax.data.prepare import DatasetNotFoundError, prepare_command, prepare_dataset
from ltpa_jax.data.registry import DATASETS, DatasetInfo, dataset_info, get_dataset_info

__all__ = [
    "DATASETS",
    "IMAGE_FILE_SUFFIXES",
    "Batch",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageFolder",
    "ImageFolderError",
    "Pipeline",
    "dataset_info",
    "get_dataset_info",
    "host_range",
    "prepare_command",
    "prepare_dataset",
    "shard_batch",
]
