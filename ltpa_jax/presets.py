"""The two sources a network can replicate (`config.model.preset`), as initialisers and layers.

* **reference**: the PyTorch reimplementation SaoYan/LearnToPayAttention. Its
  `weights_init_xavierUniform` (initialize.py) sets every `nn.Conv2d` and `nn.Linear` weight
  Xavier-uniform with gain sqrt(2) and its bias to 0, every `nn.BatchNorm2d` weight (gamma) from
  U(0, 1) and its bias (beta) to 0; its batch norms keep PyTorch's eps 1e-5 and momentum 0.1.
  No dropout anywhere.
* **official**: the authors' Torch/Lua code saumya-jetley/cd_ICLR18_LearnToPayAttention. Its
  `MSRinit` draws every `nn.SpatialConvolution` weight from N(0, 2 / (kW * kH * nOutputPlane))
  (He-normal over the fan-out) and zeroes its bias; its `nn.Linear` layers keep Torch's default
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (the ResNet's `FCinit` zeroes the bias
  of the plain ResNet's classifier); every `nn.BatchNormalization` and
  `nn.SpatialBatchNormalization` starts with gamma from U(0, 1) and beta 0 (Torch's `reset`);
  the VGG's convolutions use eps 1e-3, the other batch norms Torch's 1e-5, momentum 0.1.

Each function here answers one question for a module ("how is this conv initialised under
this preset?"), so the modules read as the layer lists of their sources. A leaf module (it
imports nothing of the package), so that `ltpa_jax.attention` and the models can both use it.
"""

import math
from typing import Literal, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

Preset = Literal["reference", "official"]
PRESETS: tuple[str, ...] = get_args(Preset)

# Reference: Xavier-uniform with gain sqrt(2) (variance 2 / fan_avg) for convs and linears.
xavier_uniform_gain_sqrt2 = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")
# Official: MSRinit, N(0, 2 / (kW * kH * nOutputPlane)): He-normal over the fan-out, not
# truncated. For the 1x1 score convolution C -> 1 (our `u`) the fan-out is 1: std sqrt(2).
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Torch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = variance 1 / (3 fan_in).
torch_linear_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

REFERENCE_BN_EPSILON = 1e-5  # PyTorch's default.
OFFICIAL_CONV_BN_EPSILON = 1e-3  # nn.SpatialBatchNormalization(n, 1e-3) of the Lua VGG.
TORCH_BN_EPSILON = 1e-5  # Torch's default, the official's other batch norms.


def uniform_0_1(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Batch-norm gamma of both sources: U(0, 1) (PyTorch's nn.init.uniform_, Torch's reset)."""
    return jax.random.uniform(key, shape, dtype)


def torch_linear_bias(fan_in: int):
    """Torch's nn.Linear default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv_kernel_init(preset: Preset):
    """Weights of every convolution (backbone, g, projections, the score vector u)."""
    return he_normal_fan_out if preset == "official" else xavier_uniform_gain_sqrt2


def dense_kernel_init(preset: Preset):
    """Weights of a linear layer."""
    return torch_linear_kernel if preset == "official" else xavier_uniform_gain_sqrt2


def dense_bias_init(preset: Preset, fan_in: int):
    """Bias of a linear layer with `fan_in` inputs (the reference zeroes it)."""
    return torch_linear_bias(fan_in) if preset == "official" else nn.initializers.zeros


def batch_norm(
    train: bool,
    dtype: jnp.dtype,
    *,
    epsilon: float = TORCH_BN_EPSILON,
    name: str | None = None,
) -> nn.BatchNorm:
    """A batch norm as both sources make it: gamma U(0, 1), beta 0, momentum 0.1 (Torch's and
    PyTorch's; flax's 0.9 is the same average), running statistics in eval."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=epsilon,
        dtype=dtype,
        scale_init=uniform_0_1,
        name=name,
    )


def dense(
    features: int, fan_in: int, preset: Preset, dtype: jnp.dtype, name: str | None = None
) -> nn.Dense:
    """A linear layer with `fan_in` inputs, initialised as the preset's source does."""
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=dense_kernel_init(preset),
        bias_init=dense_bias_init(preset, fan_in),
        name=name,
    )
