"""ltpa_jax: Learn To Pay Attention (Jetley et al., ICLR 2018) in JAX/Flax."""

from ltpa_jax import deps  # noqa: F401  (Without TensorFlow: an ImportError saying how to add it.)
from ltpa_jax.inference import attention_maps, descriptors, predict, predict_with_attention
from ltpa_jax.models import create_model

__all__ = [
    "attention_maps",
    "create_model",
    "descriptors",
    "predict",
    "predict_with_attention",
]
