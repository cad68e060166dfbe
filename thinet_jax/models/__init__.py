"""Flax Linen models built from a `ModelSpec`, and activation capture.

Example:

  >>> from thinet_jax import models, presets
  >>> spec = presets.get("vgg16-fmnist")
  >>> variables = models.init(spec, jax.random.key(0), image_size=32)
  >>> logits = models.build(spec).apply(variables, x)      # eval mode
  >>> inputs = models.consumer_inputs(spec, variables, x)  # {"conv1_2": ...}
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from thinet_jax.models.common import (
  BN_MOMENTUM,
  CONSUMER_INPUTS,
  INPUT_SUFFIX,
  OUTPUT_SUFFIX,
  PRODUCER_OUTPUTS,
)
from thinet_jax.models.resnet import Bottleneck, ResNet
from thinet_jax.models.vgg import VGG
from thinet_jax.spec import ModelSpec

__all__ = [
  "BN_MOMENTUM",
  "CONSUMER_INPUTS",
  "VGG",
  "ResNet",
  "Bottleneck",
  "build",
  "init",
  "consumer_names",
  "consumer_inputs",
  "producer_names",
  "producer_outputs",
  "PRODUCER_OUTPUTS",
]


def build(spec: ModelSpec, dtype: Any = jnp.float32) -> nn.Module:
  """The Flax module of a spec; `dtype` is the compute dtype (params f32)."""
  if spec.family == "vgg":
    return VGG(spec, dtype=dtype)
  return ResNet(spec, dtype=dtype)


def init(
  spec: ModelSpec, key: jax.Array, image_size: int, batch_size: int = 1
) -> dict[str, Any]:
  """Fresh variables ({"params", "batch_stats"?}) for `image_size` inputs."""
  x = jnp.zeros((batch_size, image_size, image_size, spec.in_channels))
  variables = jax.jit(build(spec).init)(key, x)
  return {
    k: v
    for k, v in variables.items()
    if k not in (CONSUMER_INPUTS, PRODUCER_OUTPUTS)
  }


def consumer_names(spec: ModelSpec) -> list[str]:
  """Paths ("conv1_2", "res2a/branch2b", ...) of every captured input."""
  if spec.family == "vgg":
    convs = spec.vgg_conv_names()
    return convs[1:] + ["fc" if spec.head == "gap" else "fc6"]
  return [
    f"{block}/{consumer}"
    for block in spec.resnet_block_names()
    for consumer in ("branch2b", "branch2c")
  ]


def producer_names(spec: ModelSpec) -> list[str]:
  """Paths of every conv whose post-ReLU output is captured."""
  if spec.family == "vgg":
    return spec.vgg_conv_names()
  return ["conv1"] + [
    f"{block}/{producer}"
    for block in spec.resnet_block_names()
    for producer in ("branch2a", "branch2b")
  ]


def _capture(spec, variables, x, collection, suffix, names, known):
  _, state = build(spec).apply(variables, x, mutable=[collection])
  flat = flax.traverse_util.flatten_dict(state[collection], sep="/")
  captured = {
    path.removesuffix(suffix): values[0] for path, values in flat.items()
  }
  wanted = known if names is None else names
  missing = [n for n in wanted if n not in captured]
  if missing:
    raise KeyError(
      f"nothing captured for {missing}; this spec's names are {known}"
    )
  return {n: captured[n] for n in wanted}


def consumer_inputs(
  spec: ModelSpec,
  variables: dict[str, Any],
  x: jax.Array,
  names: list[str] | None = None,
) -> dict[str, jax.Array]:
  """Inputs of prunable consumer layers, by path, from an eval-mode forward.

  Each is the producer's output after BatchNorm, ReLU and pooling, i.e. the
  X of the paper's reconstruction `y = sum_c W_c * X_c`: [B, H, W, C] (for
  the first dense layer the map before flatten or global pooling). Traceable:
  call it under `jax.jit`; the captures that are not returned are removed by
  the compiler.

  Args:
    spec: the model's spec.
    variables: its variables.
    x: images [B, H, W, in_channels].
    names: subset of `consumer_names(spec)`; default all.

  Returns:
    {path: activation} for the requested names.
  """
  return _capture(
    spec, variables, x, CONSUMER_INPUTS, INPUT_SUFFIX, names,
    consumer_names(spec),
  )  # fmt: skip


def producer_outputs(
  spec: ModelSpec,
  variables: dict[str, Any],
  x: jax.Array,
  names: list[str] | None = None,
) -> dict[str, jax.Array]:
  """Post-ReLU outputs of convs (before pooling), by path; eval mode.

  What APoZ (average percentage of zeros, Hu et al. 2016) is measured on.
  Same conventions as `consumer_inputs`; names from `producer_names(spec)`.
  """
  return _capture(
    spec, variables, x, PRODUCER_OUTPUTS, OUTPUT_SUFFIX, names,
    producer_names(spec),
  )  # fmt: skip
