"""A classifier as the training layer runs it: pure functions and shapes.

Training, evaluation, BatchNorm re-estimation, checkpoints and export need
four things of a model, whatever built it: its inference function, its
training-mode function, the shapes of its variables and a JSON
description that rebuilds it. `Net` holds exactly these; `of(model)`
turns a library preset (`ModelSpec`) into one, and `factories` builds one
for any Flax Linen or NNX model, pruned or not, from the traced
computation. Nothing here knows about pruning.

  >>> net = nets.of(spec)                       # a preset
  >>> net = factories.load("my_pkg.nets:resnet18", image_size=32)
  >>> logits = net.infer(variables, images)
  >>> logits, batch_stats = net.train(variables, images, key)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from thinet_jax.spec import ModelSpec


@dataclasses.dataclass(frozen=True, eq=False)
class Net:
  """What the training layer needs of a classifier.

  name: for messages and reports.
  infer: (variables, images [B, S, S, C]) -> logits [B, K], inference mode
    (BatchNorm running averages, no dropout).
  train: (variables, images, key) -> (logits, new batch_stats or None):
    training mode (batch statistics; dropout keyed by `key`).
  num_classes, in_channels: K and C.
  abstract: image_size -> the variables' `jax.ShapeDtypeStruct` tree.
  meta: JSON-ready description that `factories.rebuild` turns back into
    this Net ({"spec": ...} for a preset).
  bn_rate: 1 - momentum of every BatchNorm when known (re-estimation reads
    batch moments off the running averages); None: measured per layer.
  outputs: (variables, images) -> [(layer name, output)] in call order,
    for naming the first non-finite layer; None: parameters only.
  spec: the preset's ModelSpec, or None for any other model.
  traced: the model's `depgraph.Traced` (inference function), or None.
  features: (variables, images, key or None) -> (logits, new batch_stats
    or None, {name: feature map}): the forward of `train` (a key) or
    `infer` (None) that also returns the net's named feature maps (a
    ResNet's block outputs, a plain CNN's normalised conv outputs), for
    distillation of intermediate features; None: logits only.
  """

  name: str
  infer: Callable[..., Any]
  train: Callable[..., tuple[Any, Any]]
  num_classes: int
  in_channels: int
  abstract: Callable[[int], Any]
  meta: dict
  bn_rate: float | None = None
  outputs: Callable[..., list] | None = None
  spec: ModelSpec | None = None
  traced: Any = None
  features: Callable[..., tuple[Any, Any, dict]] | None = None

  def same_model(self, meta: dict) -> bool:
    """Whether a checkpoint's `meta` describes this model."""
    return meta == self.meta


def of(model: ModelSpec | Net) -> Net:
  """A Net of a preset (cached per spec: one compilation per model)."""
  if isinstance(model, Net):
    return model
  if not isinstance(model, ModelSpec):
    raise TypeError(f"expected a ModelSpec or a Net, got {type(model)}")
  return _spec_net(model)


_SPEC_NETS: dict[ModelSpec, Net] = {}


def _spec_net(spec: ModelSpec) -> Net:
  if spec in _SPEC_NETS:
    return _SPEC_NETS[spec]
  from thinet_jax import checks, models

  module = models.build(spec)

  def infer(variables, images):
    return module.apply(variables, images)

  def train(variables, images, key):
    logits, new = module.apply(
      variables, images, train=True, mutable=["batch_stats"],
      rngs={"dropout": key},
    )  # fmt: skip
    return logits, new.get("batch_stats")

  def abstract(image_size: int):
    x = jax.ShapeDtypeStruct(
      (1, image_size, image_size, spec.in_channels), jnp.float32
    )
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    return {k: shapes[k] for k in ("params", "batch_stats") if k in shapes}

  # Feature maps: a ResNet's block outputs (the residual stream), a VGG's
  # conv outputs after BatchNorm (before ReLU), or after the conv without.
  point = models.Bottleneck if spec.family == "resnet" else (
    nn.BatchNorm if spec.batch_norm else nn.Conv
  )  # fmt: skip

  def features(variables, images, key=None):
    kwargs = dict(
      capture_intermediates=lambda mdl, method: (
        isinstance(mdl, point) and method == "__call__"
      ),
      mutable=["intermediates"],
    )
    if key is not None:
      kwargs.update(train=True, rngs={"dropout": key})
      kwargs["mutable"] = ["intermediates", "batch_stats"]
    logits, state = module.apply(variables, images, **kwargs)
    state = dict(state)
    named = dict(checks.in_call_order(state.pop("intermediates"), ""))
    return logits, state.get("batch_stats"), named

  def outputs(variables, images):
    _, state = module.apply(
      variables, images, capture_intermediates=True,
      mutable=["intermediates"],
    )  # fmt: skip
    return list(checks.in_call_order(state["intermediates"], ""))

  net = Net(
    name=spec.family,
    infer=infer,
    train=train,
    num_classes=spec.num_classes,
    in_channels=spec.in_channels,
    abstract=abstract,
    meta={"spec": spec.to_dict()},
    bn_rate=1.0 - models.BN_MOMENTUM,
    outputs=outputs,
    spec=spec,
    features=features,
  )
  _SPEC_NETS[spec] = net
  return net
