"""Public inference API: logits and attention maps as pure, jit-able functions."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Collections the model sows into. `model.init` returns them too; passed back to `apply` they
# would make `sow` append to the init-time values, so they are dropped from `variables`.
_SOWN_COLLECTIONS = ("attention", "descriptors")


def _model_variables(variables: dict) -> dict:
    """`variables` without the sown collections (params, batch_stats, ... only)."""
    return {k: v for k, v in variables.items() if k not in _SOWN_COLLECTIONS}


def check_images(images: jax.Array) -> None:
    """Raises a ValueError unless images is a float [B, S, S, 3] batch."""
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"images must be a batch [B, H, W, 3] (rank 4); got shape {shape}. "
            "For a single image use images[None]."
        )
    if shape[-1] != 3:
        raise ValueError(f"images must have 3 channels in the last axis [B, H, W, 3]; got {shape}.")
    if shape[1] != shape[2] or shape[1] % 32:
        raise ValueError(
            f"images must be square with a side that is a multiple of 32 (e.g. 32, 64, 224); "
            f"got {shape[1]}x{shape[2]}. Resize them as the config's eval transform does."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"images must be floating point and normalised as in training; got dtype {dtype}. "
            "Use the dataset pipeline's normalisation (uint8 pixels are not accepted)."
        )


def forward(model: nn.Module, variables: dict, images: jax.Array) -> dict[str, Any]:
    """Everything one eval-mode forward pass gives: logits, raw attention maps, descriptors.

    Pure and jit-able (`model` static); `forward_jit` is its one compiled version, which every
    tool of the project calls. What a caller does not use is dropped by XLA.

    Args:
      model: a module from `create_model`.
      variables: {"params": ..., "batch_stats": ...}.
      images: normalised images, float [B, S, S, 3].

    Returns:
      {"logits": [B, num_classes], "maps": tap name -> map at the tap's resolution
      [B, H_t, W_t] (empty without attention), "descriptors": "global" -> g [B, C_g] and each
      tap's g_a [B, C] under its name}.
    """
    check_images(images)
    logits, state = model.apply(
        _model_variables(variables), images, train=False, mutable=list(_SOWN_COLLECTIONS)
    )
    return {
        "logits": logits,
        "maps": {name: value[0] for name, value in state.get("attention", {}).items()},
        "descriptors": {name: value[0] for name, value in state.get("descriptors", {}).items()},
    }


forward_jit = jax.jit(forward, static_argnums=0)
"""`forward` compiled once per model (a hashable flax module) and input shape."""


def predict(model: nn.Module, variables: dict, images: jax.Array) -> jax.Array:
    """Logits in eval mode (batch norm running averages), [B, num_classes] float32.

    Args: as for `forward`.
    """
    return forward(model, variables, images)["logits"]


def predict_with_attention(
    model: nn.Module, variables: dict, images: jax.Array, *, upsample: bool = True
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Logits and attention maps from one forward pass in eval mode.

    Pure: usable under `jax.jit` (with `model` and `upsample` static).

    Args:
      model, variables, images: as for `forward`.
      upsample: bilinearly upsample each map to the input resolution [B, S, S]; otherwise
        maps are at their tap's resolution [B, H_t, W_t].

    Returns:
      (logits [B, num_classes], tap name -> normalised map [B, S, S] or [B, H_t, W_t]).
    """
    out = forward(model, variables, images)
    maps = upsample_maps(out["maps"], images.shape[1]) if upsample else out["maps"]
    return out["logits"], maps


def attention_maps(
    model: nn.Module, variables: dict, images: jax.Array, *, upsample: bool = True
) -> dict[str, jax.Array]:
    """Attention maps of every tap, in eval mode: `predict_with_attention` without logits.

    Returns:
      tap name (e.g. "att1") -> normalised attention map [B, S, S] (or [B, H_t, W_t] without
      upsample) float32. Empty for a model without attention.
    """
    return predict_with_attention(model, variables, images, upsample=upsample)[1]


def upsample_maps(maps: dict[str, jax.Array], size: int) -> dict[str, jax.Array]:
    """Bilinear resize of every map [B, H_t, W_t] to the input resolution [B, S, S]."""
    return {
        name: jax.image.resize(m, (m.shape[0], size, size), method="bilinear")
        for name, m in maps.items()
    }


def descriptors(model: nn.Module, variables: dict, images: jax.Array) -> dict[str, jax.Array]:
    """Image descriptors in eval mode: g under "global" and each tap's g_a under its name.

    Returns:
      name -> [B, C] float32.
    """
    return forward(model, variables, images)["descriptors"]
