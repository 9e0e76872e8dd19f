"""Model registry: `create_model(config)` builds any network of the paper from a config."""

from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltpa_jax import validation
from ltpa_jax.models.agcnn import AGCNN
from ltpa_jax.models.heads import AttentionHead
from ltpa_jax.models.ram import RAM
from ltpa_jax.models.resnet import PreActResNetAtt
from ltpa_jax.models.spec import AttentionSpec
from ltpa_jax.models.vgg import VGGAtt

Backbone = Literal["vgg", "resnet", "agcnn", "ram"]


# Each backbone from its own fields of the model section and the fields all backbones share.
BACKBONES: dict[Backbone, Callable[..., nn.Module]] = {
    "vgg": lambda m, **shared: VGGAtt(
        batch_norm=m.batch_norm, preset=m.preset, **_blocks(m), **shared
    ),
    "resnet": lambda m, **shared: PreActResNetAtt(
        depth=m.depth, preset=m.preset, **_blocks(m), **shared
    ),
    # Other attention mechanisms (issue 17); they read no attention, remat or preset field.
    "agcnn": lambda m, **shared: AGCNN(
        num_classes=shared["num_classes"],
        width=shared["width"],
        threshold=m.agcnn_threshold,
        crop_size=m.agcnn_crop_size,
        conv_impl=shared["conv_impl"],
        dtype=shared["dtype"],
    ),
    "ram": lambda m, **shared: RAM(
        num_classes=shared["num_classes"],
        num_glimpses=m.ram_num_glimpses,
        glimpse_size=m.ram_glimpse_size,
        num_scales=m.ram_num_scales,
        hidden_size=m.ram_hidden_size,
        location_std=m.ram_location_std,
        dtype=shared["dtype"],
    ),
}


def _blocks(m: ml_collections.ConfigDict) -> dict:
    """The optional blocks of the VGG and the ResNet: squeeze-and-excitation (models/se.py)
    and local self-attention (models/local_attention.py)."""
    return dict(
        squeeze_excitation=m.squeeze_excitation,
        self_attention_kernel=m.self_attention_kernel,
        self_attention_heads=m.self_attention_heads,
    )


def uses_bfloat16(config: ml_collections.ConfigDict) -> bool:
    """Whether the network computes in bfloat16: `half_precision` anywhere, or
    `half_precision_on_accelerators` on a GPU or TPU (parameters stay float32 either way)."""
    on_accelerator = jax.default_backend() in ("gpu", "tpu")
    return bool(config.half_precision or (config.half_precision_on_accelerators and on_accelerator))


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Builds the network described by `config.model` (see ltpa_jax/configs/default.py).

    Args:
      config: an experiment config (with a `model` section, `half_precision`,
        `half_precision_on_accelerators` and `remat`), or a
        model section alone (then computation is float32, without rematerialisation).

    Returns:
      A Flax module `model(images [B, S, S, 3], train=bool) -> logits [B, num_classes]`.

    Raises:
      validation.ConfigError: a field that does not exist (a misspelt name) or an impossible
        value, named as on the command line (`validation.check_model_config`).
    """
    validation.check_model_config(config)
    whole = "model" in config
    m = config.model if whole else config
    dtype = jnp.bfloat16 if whole and uses_bfloat16(config) else jnp.float32
    remat = config.remat if whole else "none"
    return BACKBONES[m.backbone](
        m,
        num_classes=m.num_classes,
        width=m.width,
        attention=AttentionSpec.from_config(m),
        conv_impl=m.conv_impl,
        remat=remat,
        dtype=dtype,
    )


__all__ = [
    "AGCNN",
    "RAM",
    "AttentionHead",
    "AttentionSpec",
    "BACKBONES",
    "Backbone",
    "PreActResNetAtt",
    "VGGAtt",
    "create_model",
]
