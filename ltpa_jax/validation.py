"""Config checks at the boundary: fail before anything is written, naming field, value and fix."""

import jax
import ml_collections

from ltpa_jax import input_pipeline
from ltpa_jax.models import create_model


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for a config that cannot train, with the field and the fix.

    Checks the dataset name, the model section (by building the model), the input size, the
    batch sizes against the number of devices and hosts, and the schedule fields.
    """
    input_pipeline.get_dataset_info(config.dataset)
    create_model(config)
    if config.image_size <= 0 or config.image_size % 32:
        raise ValueError(
            f"config.image_size={config.image_size} must be a positive multiple of 32 (the VGG "
            "reduces the input by 32 before the global feature layer), e.g. 32, 64 or 224."
        )
    devices, hosts = jax.device_count(), jax.process_count()
    for field in ("batch_size", "eval_batch_size"):
        value = config[field]
        if value <= 0 or value % devices or value % hosts:
            raise ValueError(
                f"config.{field}={value} must be a positive multiple of the number of devices "
                f"({devices}) and hosts ({hosts}); e.g. --config.{field}="
                f"{max(devices, (max(value, 1) // devices) * devices)}."
            )
    for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if config[field] <= 0:
            raise ValueError(f"config.{field}={config[field]} must be a positive number of steps.")
    if config.half_precision and jax.default_backend() == "cpu" and config.model.conv_impl == "xla":
        raise ValueError(
            "config.half_precision=True with config.model.conv_impl='xla' on the CPU: XLA "
            "(jax 0.12) computed NaN logits for this network's jitted bfloat16 eval pass with its "
            "own convolution. Use --config.model.conv_impl=auto (winograd on the CPU), or float32."
        )
    if config.keep_checkpoints < 1:
        raise ValueError(f"config.keep_checkpoints={config.keep_checkpoints} must be at least 1.")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise ValueError(
            "Nothing to train: set config.num_epochs > 0 or config.num_train_steps > 0."
        )
    if not 0 < config.lr_decay_factor <= 1:
        raise ValueError(
            f"config.lr_decay_factor={config.lr_decay_factor} must be in (0, 1] (0.5 halves)."
        )
