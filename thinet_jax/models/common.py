"""Layers shared by the model families: conv (+ BatchNorm) (+ ReLU)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Collection that holds every prunable consumer's input (see
# `models.consumer_inputs`).
CONSUMER_INPUTS = "consumer_inputs"
# Suffix of the sown names: a sown variable may not share its module's name.
INPUT_SUFFIX = "_input"

# He initialisation over fan-out, as torchvision and Caffe's "msra" filler.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_bn(
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

  Must be called inside a compact module: the layers become that module's
  children `name` and `bn_name`. With BatchNorm the conv has no bias (the BN
  shift replaces it).
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
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
      name=bn_name,
    )(x)
  return nn.relu(x) if relu else x


def sow_input(module: nn.Module, consumer: str, x: jnp.ndarray) -> None:
  """Records `x` as the input of `module`'s child layer `consumer`.

  A no-op unless the `consumer_inputs` collection is mutable, so ordinary
  forward passes pay nothing.
  """
  module.sow(CONSUMER_INPUTS, consumer + INPUT_SUFFIX, x)
