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

import flax.linen as nn
import jax
import jax.numpy as jnp

from thinet_jax.models.common import BN_MOMENTUM
from thinet_jax.models.resnet import Bottleneck, ResNet
from thinet_jax.models.vgg import VGG
from thinet_jax.spec import ModelSpec

__all__ = [
  "BN_MOMENTUM",
  "VGG",
  "ResNet",
  "Bottleneck",
  "build",
  "init",
  "consumer_names",
  "consumer_inputs",
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
  return dict(jax.jit(build(spec).init)(key, x))


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


def consumer_inputs(
  spec: ModelSpec,
  variables: dict[str, Any],
  x: jax.Array,
  names: list[str] | None = None,
) -> dict[str, jax.Array]:
  """Inputs of prunable consumer layers, by path, from an eval-mode forward.

  Each is what the consumer layer reads: for a conv, the producer's output
  after BatchNorm, ReLU and pooling, [B, H, W, C] (the X of the paper's
  reconstruction `y = sum_c W_c * X_c`); for the first dense layer the
  flattened map [B, H*W*C] (rows in NHWC order) or, with a GAP head, the
  pooled features [B, C]. Read from outside by intercepting the layers'
  calls (`flax.linen.intercept_methods`): the models record nothing.
  Traceable: call it under `jax.jit`.

  Args:
    spec: the model's spec.
    variables: its variables.
    x: images [B, H, W, in_channels].
    names: subset of `consumer_names(spec)`; default all.

  Returns:
    {path: activation} for the requested names.
  """
  known = consumer_names(spec)
  wanted = known if names is None else list(names)
  missing = [n for n in wanted if n not in known]
  if missing:
    raise KeyError(f"no consumer {missing}; this spec's names are {known}")
  captured: dict[str, jax.Array] = {}

  def grab(next_fun, args, kwargs, context):
    if context.method_name == "__call__":
      path = "/".join(context.module.path)
      if path in wanted and path not in captured:
        captured[path] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    build(spec).apply(variables, x)
  return {n: captured[n] for n in wanted}
