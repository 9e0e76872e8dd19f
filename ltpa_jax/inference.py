"""Public inference API: logits and attention maps as pure, jit-able functions.

Every mechanism's maps come out of `attention_maps(..., method=...)`: "learned" (what the model
sows into its "attention" collection: LTPA taps, local self-attention, ...), "gradcam" (Grad-CAM
at named layers, `ltpa_jax.posthoc`) or "cam" (class activation maps, plain ResNet), so that the
learned and post-hoc maps of one checkpoint go through the same localization scores.
"""

from collections.abc import Sequence
from typing import Any, Literal, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

# Collections the model sows into. `model.init` returns them too; passed back to `apply` they
# would make `sow` append to the init-time values, so they are dropped from `variables`.
_SOWN_COLLECTIONS = ("attention", "descriptors", "channel_weights", "attention_weights")
# The ones `forward` collects.
_FORWARD_COLLECTIONS = ("attention", "descriptors")

Method = Literal["learned", "gradcam", "cam"]
METHODS: tuple[str, ...] = get_args(Method)
"""How `attention_maps` makes maps: sown by the model, Grad-CAM, or CAM."""


def _model_variables(variables: dict) -> dict:
    """`variables` without the sown collections (params, batch_stats, ... only)."""
    return {k: v for k, v in variables.items() if k not in _SOWN_COLLECTIONS}


def flatten_sown(collection: dict) -> dict[str, jax.Array]:
    """A sown collection as {name: value}: what the top module sowed under its own name, what a
    submodule sowed under its "/"-joined module path (plus "/<name>" where one module sowed
    several values), e.g. "att2", "self_attention13", "stage3_block1/self_attention"."""
    flat = {}

    def walk(node: dict, path: tuple[str, ...]) -> None:
        sown_here = [k for k, v in node.items() if isinstance(v, tuple)]
        for key, value in node.items():
            if isinstance(value, tuple):
                name = path if path and len(sown_here) == 1 else (*path, key)
                flat["/".join(name)] = value[0]
            else:
                walk(value, (*path, key))

    walk(collection, ())
    return flat


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
        _model_variables(variables), images, train=False, mutable=list(_FORWARD_COLLECTIONS)
    )
    return {
        "logits": logits,
        "maps": flatten_sown(state.get("attention", {})),
        "descriptors": flatten_sown(state.get("descriptors", {})),
    }


forward_jit = jax.jit(forward, static_argnums=0)
"""`forward` compiled once per model (a hashable flax module) and input shape."""


def predict(model: nn.Module, variables: dict, images: jax.Array) -> jax.Array:
    """Logits in eval mode (batch norm running averages), [B, num_classes] float32.

    Args: as for `forward`.
    """
    return forward(model, variables, images)["logits"]


def predict_with_attention(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    *,
    upsample: bool = True,
    method: Method = "learned",
    layers: Sequence[str] | None = None,
    target: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Logits and attention maps in eval mode, by any `METHODS`.

    Pure: usable under `jax.jit` (with `model`, `upsample`, `method` and `layers` static; a
    tuple for `layers`). `predict_with_attention_jit` is that compiled form.

    Args:
      model, variables, images: as for `forward`.
      upsample: bilinearly upsample each map to the input resolution [B, S, S]; otherwise
        maps are at their own resolution [B, H_t, W_t].
      method: "learned": the maps the model sows (one forward pass); "gradcam": Grad-CAM at
        each of `layers` (one forward and backward pass per layer); "cam": the class
        activation map of the plain ResNet (rectified), under "cam".
      layers: Grad-CAM's layers (tap names or module paths, see `posthoc.layer_names`); None:
        `posthoc.default_layers(model)` (the VGG's three tap layers, the ResNet's stage-2 and
        stage-3 outputs). Only for "gradcam".
      target: the class the post-hoc maps explain, an int or [B] ints; None: the prediction.

    Returns:
      (logits [B, num_classes], name -> map [B, S, S] or [B, H_t, W_t] float32, >= 0). Names:
      "learned" maps by the module that sowed them (tap names "att1".., "self_attention13"..);
      Grad-CAM maps by layer; CAM's map "cam". A model without learned maps gives none.

    Raises:
      ValueError: an unknown method, layers with another method than "gradcam", a layer the
        model does not have, or CAM on a model whose head does not allow it.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    if layers is not None and method != "gradcam":
        raise ValueError(f"layers={tuple(layers)} is for method='gradcam', not {method!r}.")
    if method == "learned":
        out = forward(model, variables, images)
        logits, maps = out["logits"], out["maps"]
    else:
        from ltpa_jax import posthoc  # Here: posthoc imports this module.

        if method == "cam":
            logits = forward(model, variables, images)["logits"]
            maps = {"cam": posthoc.cam(model, variables, images, target=target, rectify=True)}
        else:
            maps, logits = {}, None
            for layer in posthoc.default_layers(model) if layers is None else layers:
                parts = posthoc.grad_cam_parts(model, variables, images, layer=layer, target=target)
                maps[layer], logits = parts["map"], parts["logits"]
    maps = upsample_maps(maps, images.shape[1]) if upsample else maps
    return logits, maps


predict_with_attention_jit = jax.jit(
    predict_with_attention,
    static_argnums=0,
    static_argnames=("upsample", "method", "layers"),
)
"""`predict_with_attention` compiled once per model, method, layers and input shape (give
`layers` as a tuple)."""


def attention_maps(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    *,
    upsample: bool = True,
    method: Method = "learned",
    layers: Sequence[str] | None = None,
    target: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Attention maps in eval mode, by any method: `predict_with_attention` without logits.

    ``attention_maps(model, variables, images)`` gives the maps the model learned; with
    ``method="gradcam"`` (``layers=...``) or ``method="cam"`` the post-hoc maps of the same
    checkpoint, in the same form, for the same localization scores.

    Returns:
      name (e.g. "att1") -> map [B, S, S] (or at its own resolution without upsample)
      float32. Empty for a model without learned attention and method "learned".
    """
    return predict_with_attention(
        model, variables, images, upsample=upsample, method=method, layers=layers, target=target
    )[1]


def channel_weights(model: nn.Module, variables: dict, images: jax.Array) -> dict[str, jax.Array]:
    """The squeeze-and-excitation weights of every SE block, in eval mode (models/se.py).

    Pure and jit-able (`model` static).

    Returns:
      module path of each block (e.g. "conv3_se", "stage2_block1/se") -> s [B, C] float32 in
      (0, 1). Empty for a model without SE blocks.
    """
    check_images(images)
    _, state = model.apply(
        _model_variables(variables), images, train=False, mutable=["channel_weights"]
    )
    return flatten_sown(state.get("channel_weights", {}))


def self_attention_weights(
    model: nn.Module, variables: dict, images: jax.Array
) -> dict[str, jax.Array]:
    """The per-position weights of every local self-attention layer, in eval mode.

    Pure and jit-able (`model` static).

    Returns:
      module path of each layer (e.g. "self_attention13") -> [B, H, W, heads, k*k] float32,
      each position's softmax over its k x k neighbours (models/local_attention.py).
    """
    check_images(images)
    _, state = model.apply(
        _model_variables(variables), images, train=False, mutable=["attention_weights"]
    )
    return flatten_sown(state.get("attention_weights", {}))


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
