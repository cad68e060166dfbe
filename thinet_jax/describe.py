"""What a model is and costs: profile, captured consumer inputs, throughput.

The foundation's end-to-end job (`python -m train.describe`): it touches every
piece a pruning run stands on (model, traced program, data pipeline,
activation capture under jit) on real data, and measures the eval forward.
Any model the library reads is described the same way: a preset's spec or
a `Net` of any factory (pruned or not), through its traced program.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import factories, nets, progress
from thinet_jax.depgraph import cost


def profile(model: Any, image_size: int) -> dict[str, Any]:
  """{"image_size", "params", "flops", "layers"} of a preset's spec or any
  Net at `image_size`, read off its (pruned) traced program: the rows
  `profile.format_table` prints (`depgraph.cost.layers`)."""
  return _profile(factories.graph_of(model, image_size), model, image_size)


def _profile(traced: Any, model: Any, image_size: int) -> dict[str, Any]:
  example = factories.example(model, image_size)
  return {
    "image_size": image_size, **cost.count(traced, example),
    "layers": cost.layers(traced, example),
  }  # fmt: skip


def describe(
  model: Any,
  variables: dict[str, Any],
  batches: Iterable[dict[str, np.ndarray]],
  image_size: int,
  num_batches: int | None = None,
) -> dict[str, Any]:
  """Runs the jitted eval forward and activation capture over `batches`.

  Args:
    model, variables: a preset's ModelSpec or any Net, and its variables.
    batches: dicts with "image" [B, S, S, C] and "label" [B] (and "mask").
    image_size: S, for the profile.
    num_batches: stop after this many batches (None: all).

  Returns:
    A JSON-ready report: profile totals and layers, accuracy on the batches,
    per consumer of every prunable group its input shape and fraction of
    zeros (what APoZ counts), and the measured eval throughput (images/s,
    excluding compilation).
  """
  net = nets.of(model)
  traced = factories.graph_of(net, image_size)  # traced once: profile too
  prof = _profile(traced, net, image_size)
  inputs = {}  # consumer name -> its input's value id (a layer applied
  for g in traced.groups:  # twice: its first input)
    for c in g.consumers:
      inputs.setdefault(c.name, c.input)
  values = sorted(set(inputs.values()))
  forward = jax.jit(net.infer)

  def captured(variables, images):
    got = traced.capture(variables, images, values=values)
    return {k: got[v] for k, v in inputs.items()}

  @jax.jit
  def zeros_per_consumer(variables, images, mask):
    """Sum over real examples of each consumer input's zero fraction."""
    return {
      k: jnp.sum(jnp.mean(x == 0, axis=tuple(range(1, x.ndim))) * mask)
      for k, x in captured(variables, images).items()
    }

  correct = total = seconds = 0.0
  zeros: dict[str, float] = {}
  shapes: dict[str, list[int]] = {}
  timed_images = 0
  batches = itertools.islice(batches, num_batches)
  for n, batch in enumerate(
    progress.bar(batches, total=num_batches, desc="eval", unit="batch")
  ):
    images = jnp.asarray(batch["image"])
    mask = np.asarray(batch.get("mask", np.ones(len(images))), np.float32)
    start = time.perf_counter()
    logits = jax.block_until_ready(forward(variables, images))
    if n > 0:  # The first call compiles.
      seconds += time.perf_counter() - start
      timed_images += len(images)
    pred = np.asarray(jnp.argmax(logits, -1))
    correct += float(np.sum((pred == batch["label"]) * mask))
    total += float(mask.sum())
    for k, v in zeros_per_consumer(variables, images, mask).items():
      zeros[k] = zeros.get(k, 0.0) + float(v)
    if not shapes:
      structs = jax.eval_shape(captured, variables, images)
      shapes = {k: list(x.shape) for k, x in structs.items()}
  if total == 0:
    raise ValueError("no examples to describe: the eval split is empty")
  return {
    "model": net.meta,
    "image_size": image_size,
    "params": prof["params"],
    "flops": prof["flops"],
    "layers": prof["layers"],
    "accuracy": correct / max(total, 1.0),
    "examples": int(total),
    "consumers": {
      k: {"input_shape": shapes[k], "zero_fraction": zeros[k] / total}
      for k in zeros
    },
    "eval_images_per_second": timed_images / seconds if seconds else None,
    "devices": [str(d) for d in jax.devices()],
  }
