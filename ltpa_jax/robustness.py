"""Adversarial robustness: FGSM and PGD attacks as pure jit-compiled functions, accuracy against
epsilon, and its plot.

Attacks take images normalised as in training, ``x = (pixel - mean) / std`` with pixels in
[0, 1], and work in pixel space: ``epsilon`` is an L-infinity radius in pixel units (``8 / 255``
is the usual CIFAR budget), adversarial pixels are clipped to [0, 1], and the result is returned
normalised again, ``[B, S, S, 3]``. The model runs in eval mode (batch norm running averages).

`fgsm` and `pgd` are jit-compiled with ``model`` static; ``epsilon``, ``mean`` and ``std`` are
traced, so one compiled function serves every epsilon (``pgd`` also compiles per ``steps``).

Example:
    >>> model, variables = ...  # create_model(config), restored {"params", "batch_stats"}
    >>> curve = accuracy_under_attack(
    ...     model, variables, batches, [0, 2 / 255, 8 / 255], attack="pgd",
    ...     mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), progress=print)
    >>> plot_accuracy_vs_epsilon({"VGG-att3": curve}, "/tmp/robustness.png")
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ltpa_jax.inference import check_images
from ltpa_jax.paths import write_bytes, write_text

ATTACKS = ("fgsm", "pgd")
"""Names accepted by `accuracy_under_attack`."""
PGD_STEP_FACTOR = 2.5
"""Default PGD step size is ``PGD_STEP_FACTOR * epsilon / steps`` (Madry et al., 2018)."""

_EVAL_COLLECTIONS = ("params", "batch_stats")
_DPI = 100


def _eval_variables(variables: Mapping) -> dict:
    """`variables` with only the collections an eval-mode forward pass reads."""
    return {k: v for k, v in variables.items() if k in _EVAL_COLLECTIONS}


def _channels(values: Sequence[float] | jax.Array) -> jax.Array:
    """Per-channel statistics as float32 [3], broadcasting against [B, S, S, 3]."""
    return jnp.asarray(values, jnp.float32).reshape(3)


def _mean_loss(
    model: nn.Module,
    variables: dict,
    pixels: jax.Array,
    labels: jax.Array,
    mean: jax.Array,
    std: jax.Array,
) -> jax.Array:
    """Mean cross-entropy of the eval-mode model on pixel images [B, S, S, 3] in [0, 1]."""
    logits = model.apply(variables, (pixels - mean) / std, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.partial(jax.jit, static_argnames=("model",))
def fgsm(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    labels: jax.Array,
    epsilon: float | jax.Array,
    *,
    mean: Sequence[float] | jax.Array,
    std: Sequence[float] | jax.Array,
) -> jax.Array:
    """Fast gradient sign method (Goodfellow et al., 2015), one step in pixel space.

    ``pixel_adv = clip(pixel + epsilon * sign(grad_pixel mean_cross_entropy), 0, 1)``.

    Args:
      model: a module from `create_model` (static).
      variables: {"params": ..., "batch_stats": ...}; other collections are ignored.
      images: normalised images, float [B, S, S, 3], from pixels in [0, 1].
      labels: true classes, int [B].
      epsilon: L-infinity radius in pixel units of [0, 1], a scalar (traced).
      mean: per-channel mean of the normalisation, 3 floats.
      std: per-channel standard deviation of the normalisation, 3 floats.

    Returns:
      adversarial images, normalised, float [B, S, S, 3]. ``epsilon = 0`` returns ``images``.
    """
    mean, std = _channels(mean), _channels(std)
    variables = _eval_variables(variables)
    pixels = images * std + mean
    grad = jax.grad(_mean_loss, argnums=2)(model, variables, pixels, labels, mean, std)
    adversarial = jnp.clip(pixels + epsilon * jnp.sign(grad), 0.0, 1.0)
    # Adding the pixel change (rather than re-normalising) keeps untouched pixels bit-exact.
    return images + (adversarial - pixels) / std


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def pgd(
    model: nn.Module,
    variables: dict,
    images: jax.Array,
    labels: jax.Array,
    epsilon: float | jax.Array,
    *,
    mean: Sequence[float] | jax.Array,
    std: Sequence[float] | jax.Array,
    steps: int = 10,
    step_size: float | jax.Array | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """Projected gradient descent (Madry et al., 2018) on the L-infinity ball, in pixel space.

    Each of ``steps`` iterations takes an FGSM step of ``step_size`` and projects back onto the
    ball of radius ``epsilon`` around the clean pixels, then onto [0, 1].

    Args:
      model, variables, images, labels, epsilon, mean, std: as for `fgsm`.
      steps: number of iterations (static; one compile per value).
      step_size: pixel units per step; defaults to ``2.5 * epsilon / steps``.
      key: a PRNG key for a random start, uniform in the ball; None starts at the clean images.

    Returns:
      adversarial images, normalised, float [B, S, S, 3]. ``epsilon = 0`` returns ``images``.
    """
    mean, std = _channels(mean), _channels(std)
    variables = _eval_variables(variables)
    if step_size is None:
        step_size = PGD_STEP_FACTOR * epsilon / steps
    pixels = images * std + mean
    lower = jnp.clip(pixels - epsilon, 0.0, 1.0)
    upper = jnp.clip(pixels + epsilon, 0.0, 1.0)
    start = pixels
    if key is not None:
        noise = jax.random.uniform(key, pixels.shape, pixels.dtype, -1.0, 1.0)
        start = jnp.clip(pixels + epsilon * noise, lower, upper)
    loss_grad = jax.grad(_mean_loss, argnums=2)

    def step(_, x):
        grad = loss_grad(model, variables, x, labels, mean, std)
        return jnp.clip(x + step_size * jnp.sign(grad), lower, upper)

    adversarial = jax.lax.fori_loop(0, steps, step, start)
    return images + (adversarial - pixels) / std


@functools.partial(jax.jit, static_argnames=("model",))
def _count_correct(
    model: nn.Module, variables: dict, images: jax.Array, labels: jax.Array, mask: jax.Array
) -> jax.Array:
    """Number of rows with ``mask`` True whose top-1 prediction is the label, int32 []."""
    logits = model.apply(_eval_variables(variables), images, train=False)
    return jnp.sum((jnp.argmax(logits, -1) == labels) & mask, dtype=jnp.int32)


def _prepare_batch(batch: Mapping, index: int) -> tuple[jax.Array, np.ndarray, np.ndarray]:
    """(images [b, S, S, 3], labels int32 [b], mask bool [b]) of one batch, checked."""
    if "image" not in batch or "label" not in batch:
        raise ValueError(
            f"batch {index} must be a dict with 'image' [b, S, S, 3] and 'label' [b] (and "
            f"optionally 'mask' [b]); got keys {sorted(batch)}."
        )
    images = jnp.asarray(batch["image"])
    check_images(images)
    b = images.shape[0]
    labels = np.asarray(batch["label"])
    mask = np.asarray(batch["mask"], bool) if "mask" in batch else np.ones((b,), bool)
    for name, array in (("label", labels), ("mask", mask)):
        if array.shape != (b,):
            raise ValueError(
                f"batch {index}: '{name}' must have shape [b] = [{b}] to match 'image' "
                f"{list(images.shape)}; got {list(array.shape)}."
            )
    # Padded rows may carry any label; a valid one keeps their (ignored) loss finite.
    labels = np.where(mask, labels, 0).astype(np.int32)
    return images, labels, mask


def accuracy_under_attack(
    model: nn.Module,
    variables: dict,
    batches: Iterable[Mapping],
    epsilons: Iterable[float],
    *,
    attack: str = "fgsm",
    mean: Sequence[float],
    std: Sequence[float],
    steps: int = 10,
    progress: Callable[[str], None] | None = None,
) -> dict[float, float]:
    """Top-1 accuracy on adversarial images, for each epsilon.

    Every image is attacked independently with its true label (white box, eval mode).

    Args:
      model: a module from `create_model`.
      variables: {"params": ..., "batch_stats": ...}.
      batches: an iterable (a generator is fine: it is read once) of dicts with "image"
        [b, S, S, 3] normalised, "label" int [b] and optionally "mask" bool [b] (False rows,
        such as padding, are excluded).
      epsilons: L-infinity radii in pixel units of [0, 1]; 0 gives the clean accuracy (no
        attack is run).
      attack: "fgsm" or "pgd" (`pgd` with ``steps`` iterations, default step size, no random
        start).
      mean, std: per-channel normalisation of the images, 3 floats each.
      steps: PGD iterations (ignored for FGSM).
      progress: called once per epsilon with a line such as
        ``"fgsm eps=0.0314: accuracy 0.4123 (1000 images)"``.

    Returns:
      epsilon (float) -> accuracy in [0, 1], in the order of ``epsilons``.

    Raises:
      ValueError: for an unknown attack, a negative or non-finite epsilon, batches without
        the expected keys or shapes, or no unmasked image at all.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack={attack!r} is not a known attack; use one of {ATTACKS}.")
    epsilons = [float(e) for e in epsilons]
    for eps in epsilons:
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(
                f"epsilon={eps} is not possible: epsilons are L-infinity radii in pixel units of "
                "[0, 1], finite and >= 0 (e.g. 8 / 255)."
            )
    if attack == "pgd" and steps < 1:
        raise ValueError(f"steps={steps} is not possible for PGD; use steps >= 1.")
    prepared = [_prepare_batch(batch, i) for i, batch in enumerate(batches)]
    total = int(sum(mask.sum() for _, _, mask in prepared))
    if total == 0:
        raise ValueError("batches hold no image with mask True: there is nothing to attack.")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    run_attack = functools.partial(pgd, steps=steps) if attack == "pgd" else fgsm

    curve = {}
    for eps in epsilons:
        correct = 0
        for images, labels, mask in prepared:
            if eps > 0:
                images = run_attack(model, variables, images, labels, eps, mean=mean, std=std)
            correct += int(_count_correct(model, variables, images, labels, mask))
        curve[eps] = correct / total
        if progress is not None:
            progress(f"{attack} eps={eps:.4f}: accuracy {curve[eps]:.4f} ({total} images)")
    return curve


def plot_accuracy_vs_epsilon(
    curves: Mapping[str, Mapping[float, float]], path: str, *, title: str | None = None
) -> str:
    """Plots top-1 accuracy against epsilon, one line per run.

    Args:
      curves: run label (e.g. "VGG-att3 (demo)") -> {epsilon in [0, 1] units: accuracy}, as
        returned by `accuracy_under_attack`.
      path: PNG file to write; its parent directory is created.
      title: figure title (none when None).

    Returns:
      ``path``.
    """
    fig = Figure(figsize=(6, 4), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        eps = sorted(curve)
        ax.plot([e * 255 for e in eps], [curve[e] for e in eps], marker="o", label=str(label))
    ax.set_xlabel("epsilon (/255)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.4)
    if curves:
        ax.legend()
    if title:
        ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    write_bytes(path, buffer.getvalue())
    return path


def write_csv(curves: Mapping[str, Mapping[float, float]], path: str) -> str:
    """Writes the curves as a table: epsilon, epsilon_255, then one accuracy column per run.

    Rows are the union of the runs' epsilons, sorted; a run without an epsilon leaves its cell
    empty.

    Args:
      curves: run label -> {epsilon: accuracy}, as for `plot_accuracy_vs_epsilon`.
      path: CSV file to write; its parent directory is created.

    Returns:
      ``path``.
    """
    labels = list(curves)
    epsilons = sorted({float(e) for curve in curves.values() for e in curve})
    lookup = {label: {float(e): a for e, a in curves[label].items()} for label in labels}
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["epsilon", "epsilon_255", *labels])
    for eps in epsilons:
        cells = [lookup[label].get(eps, "") for label in labels]
        writer.writerow([repr(eps), f"{eps * 255:.6g}", *cells])
    write_text(path, text.getvalue())
    return path
