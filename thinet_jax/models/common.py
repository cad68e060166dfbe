"""Layers shared by the model families: conv (+ BatchNorm) (+ ReLU)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# He initialisation over fan-out, as torchvision and Caffe's "msra" filler.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# Running averages: new = BN_MOMENTUM * old + (1 - BN_MOMENTUM) * batch value.
BN_MOMENTUM = 0.9


def conv_bn(
  module: nn.Module,
  x: jnp.ndarray,
  width: int,
  name: str,
  bn_name: str,
  *,
  kernel: int,
  stride: int = 1,
  batch_norm: bool,
  train: bool,
  relu: bool = True,
  dtype: Any = jnp.float32,
) -> jnp.ndarray:
  """kxk conv with Caffe/PyTorch padding (k // 2), optional BN, optional ReLU.

  Called inside `module`'s compact `__call__`: the layers become its children
  `name` and `bn_name`. With BatchNorm the conv has no bias (the BN shift
  replaces it).
  """
  pad = kernel // 2
  x = nn.Conv(
    width,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=not batch_norm,
    kernel_init=conv_init,
    dtype=dtype,
    name=name,
  )(x)
  if batch_norm:
    x = nn.BatchNorm(
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=1e-5,
      dtype=dtype,
      name=bn_name,
    )(x)
  if not relu:
    return x
  return nn.relu(x)
