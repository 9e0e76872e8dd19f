"""Public inference API: logits and attention maps as pure, jit-able functions."""

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
            "Use input_pipeline's normalisation (uint8 pixels are not accepted)."
        )


def predict(model: nn.Module, variables: dict, images: jax.Array) -> jax.Array:
    """Logits in eval mode (batch norm running averages).

    Args:
      model: a module from `create_model`.
      variables: {"params": ..., "batch_stats": ...}.
      images: normalised images, float [B, S, S, 3].

    Returns:
      logits, [B, num_classes] float32.
    """
    check_images(images)
    return model.apply(variables, images, train=False)


def attention_maps(
    model: nn.Module, variables: dict, images: jax.Array, *, upsample: bool = True
) -> dict[str, jax.Array]:
    """Attention maps of every tap, in eval mode.

    Pure: no side effects, usable under `jax.jit` (with `model` and `upsample` static).

    Args:
      model: a module from `create_model`.
      variables: {"params": ..., "batch_stats": ...}.
      images: normalised images, float [B, S, S, 3].
      upsample: bilinearly upsample each map to the input resolution [B, S, S]; otherwise
        maps are at their tap's resolution [B, H_t, W_t].

    Returns:
      tap name (e.g. "att1") -> normalised attention map [B, H, W] float32. Empty for a
      model without attention.
    """
    check_images(images)
    _, state = model.apply(_model_variables(variables), images, train=False, mutable=["attention"])
    maps = {name: value[0] for name, value in state.get("attention", {}).items()}
    if upsample:
        maps = upsample_maps(maps, images.shape[1])
    return maps


def predict_with_attention(
    model: nn.Module, variables: dict, images: jax.Array, *, upsample: bool = True
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Logits and attention maps from one forward pass in eval mode.

    Args:
      model, variables, images: as for `predict`.
      upsample: as for `attention_maps`.

    Returns:
      (logits [B, num_classes], tap name -> map [B, S, S] or [B, H_t, W_t]).
    """
    check_images(images)
    logits, state = model.apply(
        _model_variables(variables), images, train=False, mutable=["attention"]
    )
    maps = {name: value[0] for name, value in state.get("attention", {}).items()}
    if upsample:
        maps = upsample_maps(maps, images.shape[1])
    return logits, maps


def upsample_maps(maps: dict[str, jax.Array], size: int) -> dict[str, jax.Array]:
    """Bilinear resize of every map [B, H_t, W_t] to the input resolution [B, S, S]."""
    return {
        name: jax.image.resize(m, (m.shape[0], size, size), method="bilinear")
        for name, m in maps.items()
    }


def descriptors(model: nn.Module, variables: dict, images: jax.Array) -> dict[str, jax.Array]:
    """Image descriptors in eval mode: g under "global" and each tap's g_a under its name.

    Args:
      model, variables, images: as for `predict`.

    Returns:
      name -> [B, C] float32.
    """
    check_images(images)
    _, state = model.apply(
        _model_variables(variables), images, train=False, mutable=["descriptors"]
    )
    return {name: value[0] for name, value in state["descriptors"].items()}
