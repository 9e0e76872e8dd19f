"""Model registry: `create_model(config)` builds any network of the paper from a config."""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ltpa_jax.attention import COMPATIBILITIES, NORMALIZATIONS, PROJECTIONS
from ltpa_jax.models import resnet
from ltpa_jax.models.conv import CONV_IMPLS
from ltpa_jax.models.heads import HEADS, AttentionHead
from ltpa_jax.models.remat import REMAT_MODES
from ltpa_jax.models.resnet import PreActResNetAtt
from ltpa_jax.models.vgg import TAP_NAMES, TAP_POSITIONS, VGGAtt


def _vgg(m: ml_collections.ConfigDict, dtype: jnp.dtype, remat: str) -> nn.Module:
    if not 0 <= m.num_taps <= len(TAP_NAMES):
        raise ValueError(
            f"model.num_taps={m.num_taps} is not possible for the VGG backbone: use 0 (plain VGG), "
            "1, 2 or 3 (att1-att3)."
        )
    _check_choice("model.tap_position", m.tap_position, TAP_POSITIONS)
    return VGGAtt(
        num_classes=m.num_classes,
        width=m.width,
        num_taps=m.num_taps,
        compatibility=m.compatibility,
        normalization=m.normalization,
        tap_position=m.tap_position,
        projection=m.projection,
        head=m.head,
        batch_norm=m.batch_norm,
        conv_impl=m.conv_impl,
        remat=remat,
        dtype=dtype,
    )


def _resnet(m: ml_collections.ConfigDict, dtype: jnp.dtype, remat: str) -> nn.Module:
    resnet.blocks_per_stage(m.depth)  # Raises for a depth that is not 9n + 2.
    if not 0 <= m.num_taps <= len(resnet.TAP_NAMES):
        raise ValueError(
            f"model.num_taps={m.num_taps} is not possible for model.backbone='resnet': use 0 "
            "(plain ResNet), 1 (att2: end of stage 3) or 2 (RN-att2: att1 = end of stage 2, "
            "att2 = end of stage 3)."
        )
    if m.tap_position not in resnet.TAP_POSITIONS:
        raise ValueError(
            f"model.tap_position={m.tap_position!r} does not exist for model.backbone='resnet' "
            "(no max-pool follows its taps); use one of "
            f"{resnet.TAP_POSITIONS}."
        )
    if not m.batch_norm:
        raise ValueError(
            "model.batch_norm=False is not possible for model.backbone='resnet' (batch norm is "
            "part of every pre-activation block); use model.batch_norm=True."
        )
    return PreActResNetAtt(
        num_classes=m.num_classes,
        depth=m.depth,
        width=m.width,
        num_taps=m.num_taps,
        compatibility=m.compatibility,
        normalization=m.normalization,
        projection=m.projection,
        head=m.head,
        conv_impl=m.conv_impl,
        remat=remat,
        dtype=dtype,
    )


BACKBONES: dict[str, Callable[[ml_collections.ConfigDict, jnp.dtype, str], nn.Module]] = {
    "vgg": _vgg,
    "resnet": _resnet,
}


def _check_choice(field: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{field}={value!r} is not a valid choice; use one of {choices}.")


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Builds the network described by `config.model` (see configs/default.py).

    Args:
      config: an experiment config (with a `model` section, `half_precision` and `remat`), or a
        model section alone (then computation is float32, without rematerialisation).

    Returns:
      A Flax module `model(images [B, S, S, 3], train=bool) -> logits [B, num_classes]`.
    """
    m = config.model if "model" in config else config
    half = config.get("half_precision", False) if "model" in config else False
    remat = config.get("remat", "none") if "model" in config else "none"
    _check_choice("model.backbone", m.backbone, tuple(BACKBONES))
    _check_choice("model.compatibility", m.compatibility, COMPATIBILITIES)
    _check_choice("model.normalization", m.normalization, NORMALIZATIONS)
    _check_choice("model.projection", m.projection, PROJECTIONS)
    _check_choice("model.head", m.head, HEADS)
    _check_choice("model.conv_impl", m.conv_impl, CONV_IMPLS)
    if m.num_classes < 1:
        raise ValueError(f"model.num_classes={m.num_classes} must be at least 1.")
    if m.width <= 0:
        raise ValueError(f"model.width={m.width} must be positive (1.0 = the paper's widths).")
    _check_choice("remat", remat, REMAT_MODES)
    return BACKBONES[m.backbone](m, jnp.bfloat16 if half else jnp.float32, remat)


__all__ = ["AttentionHead", "BACKBONES", "PreActResNetAtt", "VGGAtt", "create_model"]
