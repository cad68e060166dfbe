"""Layers shared by the model families: conv (+ BatchNorm) (+ ReLU)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Collection that holds every prunable consumer's input (see
# `models.consumer_inputs`).
CONSUMER_INPUTS = "consumer_inputs"
# Collection that holds every ReLU'd conv output (the producer's post-ReLU
# map, before any pooling): what APoZ (Hu et al. 2016) counts zeros of.
PRODUCER_OUTPUTS = "producer_outputs"
# Suffixes of the sown names: a sown variable may not share a module's name.
INPUT_SUFFIX = "_input"
OUTPUT_SUFFIX = "_output"

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
  `name` and `bn_name`, and the post-ReLU output is sown into its
  `producer_outputs` collection as `name`. With BatchNorm the conv has no
  bias (the BN shift replaces it).
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
  x = nn.relu(x)
  module.sow(PRODUCER_OUTPUTS, name + OUTPUT_SUFFIX, x)
  return x


def sow_input(module: nn.Module, consumer: str, x: jnp.ndarray) -> jnp.ndarray:
  """Records `x` as the input of `module`'s child layer `consumer` and
  returns it; a no-op unless the `consumer_inputs` collection is mutable."""
  module.sow(CONSUMER_INPUTS, consumer + INPUT_SUFFIX, x)
  return x
