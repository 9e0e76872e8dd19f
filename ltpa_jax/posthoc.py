"""Post-hoc attention maps of a trained network: Grad-CAM at a named layer, and CAM.

Both are pure functions of ``(model, variables, images)`` in eval mode (batch norm running
averages), batched, and usable under ``jax.jit`` with ``model``, ``layer`` and ``rectify``
static (``target`` may be traced)::

    >>> maps = jax.jit(grad_cam, static_argnums=0, static_argnames="layer")(
    ...     model, variables, images, layer="att2")  # [B, H_l, W_l]

Grad-CAM (Selvaraju et al. 2017) at a layer with feature map ``A`` [B, H, W, C]: the channel
weights are the spatial mean of the gradient of the target logit, ``w_c = mean_{h,w}
d y_k / d A_{hwc}``, and the map is ``ReLU(sum_c w_c A_c)``. The gradient is taken with respect
to the layer's output as the rest of the network consumes it (every path to the logits), by
adding a zero perturbation to that output through `flax.linen.intercept_methods`, so no model
needs a `perturb` call of its own.

CAM (Zhou et al. 2016) applies only where the classifier is global average pooling followed by
one linear layer (the plain ResNet, ``num_taps=0``): ``CAM_k = sum_c W_{ck} F_c`` on the
pooled features ``F``, whose spatial mean plus the bias is the logit of class k.

Maps come out at the layer's resolution; `ltpa_jax.inference.upsample_maps` brings them to the
input resolution for the localization scores.
"""

import re
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltpa_jax.inference import _model_variables, check_images
from ltpa_jax.models import resnet, vgg
from ltpa_jax.models.resnet import PreActResNetAtt
from ltpa_jax.models.vgg import VGGAtt

_SOWN = ("attention", "descriptors")


def _vgg_tap_blocks() -> dict[str, str]:
    """VGG tap name -> the conv block whose output is the tap's local feature ("before")."""
    blocks, conv_index = {}, 0
    for channels, tap in vgg.STAGES:
        conv_index += len(channels)
        if tap is not None:
            blocks[tap] = f"conv{conv_index}"
    return blocks


VGG_TAP_BLOCKS = _vgg_tap_blocks()
"""{"att1": "conv7", "att2": "conv10", "att3": "conv13"}."""


def tap_block(model: VGGAtt, tap: str) -> str:
    """The module whose output is a VGG tap's local feature ("before"): conv7, conv10, conv13,
    or in their place self_attention13 (stage 5 with self-attention), or the "<layer>_se" block
    that follows each layer with squeeze-and-excitation."""
    block = VGG_TAP_BLOCKS[tap]
    if model.self_attention_kernel and tap == vgg.STAGES[-1][1]:
        block = block.replace("conv", "self_attention")
    return f"{block}_se" if model.squeeze_excitation else block


def default_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers `inference.attention_maps(method="gradcam")` explains when none are given.

    The VGG's three tap layers ("att1", "att2", "att3", whether or not the network attends
    there: the same places as the learned maps); the ResNet's stage-2 and stage-3 outputs
    (the last block of each, the places of its two taps).

    Raises:
      ValueError: another model (name its layers, see `layer_names`).
    """
    if isinstance(model, VGGAtt):
        return tuple(VGG_TAP_BLOCKS)
    if isinstance(model, PreActResNetAtt):
        n = resnet.blocks_per_stage(model.depth)
        return (f"stage2_block{n}", f"stage3_block{n}")
    raise ValueError(
        f"Grad-CAM has no default layers for {type(model).__name__}: name them (layers=..., "
        "--layers=...); posthoc.layer_names(model, variables, images) lists them."
    )


def _without_remat(model: nn.Module) -> nn.Module:
    """The same network without rematerialisation (same parameters; memory only matters for
    training): a remat block runs its body inside `jax.checkpoint`, where the features it
    returns could not be recorded for the caller."""
    return model.clone(remat="none") if getattr(model, "remat", "none") != "none" else model


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def _natural_key(path: str) -> tuple:
    """Sort key that orders digits by value: "conv2" < "conv10", "conv2" < "conv2/Conv_0"."""
    return tuple(
        tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part))
        for part in path.split("/")
    )


def module_layers(model: nn.Module, variables: dict, images: jax.Array) -> tuple[str, ...]:
    """Module paths (e.g. "conv10", "conv10/BatchNorm_0") that Grad-CAM can use directly.

    Those whose ``__call__`` runs once per forward pass and returns one array [B, H, W, C].
    Traced with `jax.eval_shape` (no compute).

    Args:
      model: a module from `ltpa_jax.create_model`.
      variables: {"params": ..., "batch_stats": ...} (arrays or shapes).
      images: [B, S, S, 3] (arrays or shapes).

    Returns:
      The paths, "/"-joined, in natural order ("conv2" before "conv10", a block before its
      submodules).
    """

    model = _without_remat(model)

    def captured(v, x):
        return model.apply(
            v, x, train=False, capture_intermediates=True, mutable=["intermediates", *_SOWN]
        )[1]["intermediates"]

    tree = jax.eval_shape(captured, _abstract(_model_variables(variables)), _abstract(images))
    layers = []

    def walk(node: dict, path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if key == "__call__":
                if len(value) == 1 and getattr(value[0], "ndim", None) == 4 and path:
                    layers.append("/".join(path))
            elif isinstance(value, dict):
                walk(value, (*path, key))

    walk(tree, ())
    return tuple(sorted(layers, key=_natural_key))


def layer_names(model: nn.Module, variables: dict, images: jax.Array) -> tuple[str, ...]:
    """Every name `grad_cam` accepts for this model: tap names (VGG), then module paths.

    The VGG's tap names ("att1", "att2", "att3") name the tap's local feature (the output of
    conv7, conv10 or conv13, max-pooled when ``tap_position`` is "after"), whether or not the
    network attends there.
    """
    taps = tuple(VGG_TAP_BLOCKS) if isinstance(model, VGGAtt) else ()
    return taps + module_layers(model, variables, images)


def _max_pool_lift(y: jax.Array, delta: jax.Array) -> jax.Array:
    """A change of y [B, H, W, C] whose 2x2 max-pool is ``delta`` [B, H/2, W/2, C].

    ``delta`` goes to every maximum of its window (ties included), so that
    ``max_pool(y + lift) = max_pool(y) + delta`` to first order and the gradient with respect to
    ``delta`` is the gradient with respect to the pooled features, whichever tied element the
    max-pool's derivative picks.
    """
    b, h, w, c = y.shape
    windows = y.reshape(b, h // 2, 2, w // 2, 2, c)
    peak = jnp.max(windows, axis=(2, 4), keepdims=True)
    at_peak = jax.lax.stop_gradient(windows == peak).astype(delta.dtype)
    lift = at_peak * delta[:, :, None, :, None, :]
    return lift.reshape(b, h, w, c)


def _resolve(
    model: nn.Module, variables: dict, images: jax.Array, layer: str
) -> tuple[str, Callable[[jax.Array], jax.Array] | None]:
    """(module path to intercept, pooling of its output or None) for a layer name."""
    if isinstance(model, VGGAtt) and layer in VGG_TAP_BLOCKS:
        pooled = model.attention.tap_position == "after"
        return tap_block(model, layer), vgg.max_pool if pooled else None
    if layer in module_layers(model, variables, images):
        return layer, None
    valid = ", ".join(layer_names(model, variables, images))
    raise ValueError(
        f"Unknown layer {layer!r} for Grad-CAM on {type(model).__name__}. Valid layers (tap "
        f"names, then module paths whose output is a feature map [B, H, W, C]): {valid}."
    )


def _logits_and_features(
    model: nn.Module, variables: dict, images: jax.Array, path: str, pool, delta: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Eval-mode logits [B, K], with ``delta`` added to the layer's features A, and A.

    With ``delta`` None, A is only recorded (its shape is found this way).
    """
    target_path = tuple(path.split("/"))
    recorded = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or context.module.path != target_path:
            return out
        features = out if pool is None else pool(out)
        recorded.append(features)
        if delta is None:
            return out
        if pool is None:
            return out + delta.astype(out.dtype)
        return out + _max_pool_lift(out, delta.astype(out.dtype))

    with nn.intercept_methods(interceptor):
        logits, _ = model.apply(
            _model_variables(variables), images, train=False, mutable=list(_SOWN)
        )
    (features,) = recorded
    return logits, features


def _targets(logits: jax.Array, target: jax.Array | None) -> jax.Array:
    """Class per image [B] int32: ``target`` broadcast to the batch, or the argmax."""
    if target is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), logits.shape[:1])


def grad_cam_parts(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    *,
    layer: str,
    target: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Everything Grad-CAM computes at ``layer``, in eval mode: one forward and one backward pass.

    Args: as for `grad_cam`.

    Returns:
      {"logits": [B, K] float32, "target": [B] int32, "features": A [B, H_l, W_l, C],
      "gradients": d logit[target] / dA [B, H_l, W_l, C] float32, "weights": [B, C] float32,
      "map": [B, H_l, W_l] float32}.
    """
    check_images(images)
    model = _without_remat(model)
    path, pool = _resolve(model, variables, images, layer)
    shape = jax.eval_shape(
        lambda v, x: _logits_and_features(model, v, x, path, pool, None)[1],
        _abstract(variables),
        _abstract(images),
    )
    zeros = jnp.zeros(shape.shape, jnp.float32)
    logits, pullback, features = jax.vjp(
        lambda d: _logits_and_features(model, variables, images, path, pool, d), zeros, has_aux=True
    )
    targets = _targets(logits, target)
    # Each image's logits depend on its own features only (eval mode), so one pullback of the
    # one-hot targets gives every image's gradient.
    (gradients,) = pullback(jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype))
    weights = jnp.mean(gradients, axis=(1, 2))
    cam_map = nn.relu(jnp.einsum("bhwc,bc->bhw", features.astype(jnp.float32), weights))
    return {
        "logits": logits,
        "target": targets,
        "features": features,
        "gradients": gradients,
        "weights": weights,
        "map": cam_map,
    }


def grad_cam(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    *,
    layer: str,
    target: jax.Array | None = None,
) -> jax.Array:
    """Grad-CAM maps at a named layer, in eval mode (batch norm running averages).

    Pure and jit-able (``model``, ``layer`` static); batched (each image's map depends on that
    image only).

    Args:
      model: a module from `ltpa_jax.create_model` (VGG with any ``num_taps``, ResNet).
      variables: {"params": ..., "batch_stats": ...} (the full `init` output is accepted).
      images: normalised images, float [B, S, S, 3].
      layer: a tap name of the VGG ("att1", "att2", "att3": the tap's local feature, pooled
        when ``tap_position`` is "after") or a module path such as "conv10",
        "conv10/BatchNorm_0" or "stage3_block2" (see `layer_names`).
      target: the class to explain, an int or [B] ints; None explains the predicted class
        (the argmax of the logits).

    Returns:
      ``ReLU(sum_c w_c A_c)`` [B, H_l, W_l] float32 at the layer's resolution, with
      ``w_c = mean_{h,w} d logit[target] / dA_{hwc}``.

    Raises:
      ValueError: an unknown layer (the message lists the valid ones), or malformed images.
    """
    return grad_cam_parts(model, variables, images, layer=layer, target=target)["map"]


def cam(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    *,
    target: jax.Array | None = None,
    rectify: bool = False,
) -> jax.Array:
    """Class activation maps (CAM) of a network whose head is global average pooling + linear.

    Pure and jit-able (``model``, ``rectify`` static). Only the plain ResNet (``num_taps=0``)
    has such a head: its activated stage-3 features F [B, H, W, C] are averaged and classified
    by one dense layer (W [C, K], b [K]), so ``logit_k = mean_{h,w} CAM_k + b_k`` with
    ``CAM_k = sum_c W_{ck} F_c``.

    Args:
      model: a plain `PreActResNetAtt` from `ltpa_jax.create_model`.
      variables: {"params": ..., "batch_stats": ...}.
      images: normalised images, float [B, S, S, 3].
      target: the class, an int or [B] ints; None = the predicted class.
      rectify: apply a ReLU to the map (the localization "mass" score wants non-negative maps).

    Returns:
      CAM of the target class, [B, H, W] float32 (8x8 for a 32x32 input).

    Raises:
      ValueError: the model's head is not pooling + one linear layer (the VGG's global feature
        is a convolution over the whole remaining map; an attention network classifies the
        attended descriptors): use `grad_cam` there.
    """
    check_images(images)
    if not isinstance(model, PreActResNetAtt) or model.tap_names:
        if getattr(model, "tap_names", ()):
            why = "its classifier reads attention-weighted descriptors, not pooled features"
        elif isinstance(model, VGGAtt):
            why = (
                "its global feature g is a convolution over the whole remaining map, not a pooling"
            )
        else:
            why = "its head is not global average pooling followed by one linear layer"
        raise ValueError(
            f"CAM does not apply to {type(model).__name__} with taps "
            f"{tuple(getattr(model, 'tap_names', ()))}: {why}. Use Grad-CAM instead, which "
            "works at any layer of any model: --method=gradcam on the command line, "
            'method="gradcam" in inference.attention_maps, or posthoc.grad_cam.'
        )
    logits, bn = _logits_and_features(
        _without_remat(model), variables, images, "final_bn", None, None
    )
    features = nn.relu(bn).astype(jnp.float32)
    dense = variables["params"]["classifier"]
    kernel = dense["kernel"].astype(jnp.float32)  # [C, K]
    targets = _targets(logits, target)
    cam_map = jnp.einsum("bhwc,cb->bhw", features, kernel[:, targets])
    return nn.relu(cam_map) if rectify else cam_map
