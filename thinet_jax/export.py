"""Serialized inference artifacts with `jax.export` (StableHLO).

A (pruned) model becomes a self-contained function of the images only: the
variables are baked in as constants, the batch size is symbolic, and the
artifact reloads in any process with JAX alone (no thinet_jax, no spec).

Example:

  >>> blob = export.export_model(spec, variables, image_size=32)
  >>> open("model.jaxexport", "wb").write(blob)
  >>> forward = export.load(open("model.jaxexport", "rb").read())
  >>> logits = forward(images)          # images: f32[B, 32, 32, C]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from thinet_jax import nets
from thinet_jax.spec import ModelSpec


def export_model(
  spec: ModelSpec | nets.Net,
  variables: dict[str, Any],
  image_size: int,
  platforms: tuple[str, ...] | None = None,
  batch: int | None = None,
) -> bytes:
  """Serialized eval-mode forward pass, images [B, S, S, C] -> logits.

  Args:
    spec, variables: the model: a preset's spec or any model's
      `nets.Net` (a factory's, pruned or not).
    image_size: S.
    platforms: lowering platforms (e.g. ("cpu", "cuda")); default the
      current backend.
    batch: a fixed batch size; default symbolic (any batch), except for
      a pruned factory model, whose traced program has concrete shapes:
      it exports at batch 1 unless given.
  """
  net = nets.of(spec)
  consts = jax.tree.map(jnp.asarray, variables)

  def forward(images):
    return net.infer(consts, images)

  if batch is None and net.traced is not None and net.traced.masks:
    batch = 1
  if batch is None:
    (batch,) = jax.export.symbolic_shape("b")
  shape = jax.ShapeDtypeStruct(
    (batch, image_size, image_size, net.in_channels), jnp.float32
  )
  exported = jax.export.export(jax.jit(forward), platforms=platforms)(shape)
  return bytes(exported.serialize())


def load(blob: bytes) -> Callable[[jax.Array], jax.Array]:
  """The forward function of a serialized artifact."""
  return jax.export.deserialize(bytearray(blob)).call
