"""Cross-domain features: a trained network's descriptors for a dataset, and a linear probe.

The paper's cross-domain experiment freezes a network trained on one dataset, describes the
images of another with it (the attended descriptors g_a of an attention model, the global
feature g of the baseline) and fits a linear classifier on them. `export_features` computes the
descriptors, `linear_probe` fits and scores a logistic regression (scikit-learn).
"""

from collections.abc import Iterable, Mapping

import jax
import numpy as np

from ltpa_jax.inference import forward_jit

ATTENTION = "attention"
"""Name of the concatenation of every tap's g_a (the attention model's image descriptor)."""


def export_features(
    model, variables: dict, batches: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Descriptors of every real row of `batches`.

    Args:
      model, variables: a trained network (`rundir.open_run`).
      batches: dicts with "image" [b, S, S, 3] normalised, "label" [b], optional "mask" [b].

    Returns:
      "labels" [N] int32, "global" [N, C_g] (g), each tap's g_a [N, C] under its name, and, for
      an attention model, their concatenation under `ATTENTION` [N, sum C].
    """
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        keep = np.asarray(batch.get("mask", np.ones(len(batch["label"]), bool)))
        features = forward_jit(model, variables, jax.numpy.asarray(batch["image"]))["descriptors"]
        rows = {k: np.asarray(v)[keep] for k, v in features.items()}
        rows["labels"] = np.asarray(batch["label"], np.int32)[keep]
        for key, value in rows.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raise ValueError("export_features got no batches.")
    out = {key: np.concatenate(value) for key, value in parts.items()}
    taps = sorted(k for k in out if k not in ("global", "labels"))
    if taps:
        out[ATTENTION] = np.concatenate([out[k] for k in taps], axis=1)
    return out


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    regularization: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Top-1 test accuracy of a logistic regression on standardised features.

    Args:
      train_x: [N, C] features; train_y: [N] int labels.
      test_x: [M, C]; test_y: [M].
      regularization: inverse L2 strength (scikit-learn's C).
      max_iter: iterations of the L-BFGS solver.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"features must be [N, C] and [M, C] with the same C; got {train_x.shape} and "
            f"{test_x.shape}."
        )
    if len(np.unique(train_y)) < 2:
        raise ValueError("The probe's training labels hold a single class; use more images.")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=max_iter))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def probe_all(
    train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], **kwargs
) -> dict[str, float]:
    """`linear_probe` accuracy of every descriptor that `export_features` returned."""
    names = [k for k in train if k != "labels"]
    return {
        name: linear_probe(train[name], train["labels"], test[name], test["labels"], **kwargs)
        for name in names
    }
