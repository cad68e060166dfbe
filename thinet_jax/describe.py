"""What a model is and costs: profile, captured consumer inputs, throughput.

The foundation's end-to-end job (`python -m train.describe`): it touches every
piece a pruning run stands on (spec, model, profiler, data pipeline,
activation capture under jit) on real data, and measures the eval forward.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import models, profile, progress
from thinet_jax.spec import ModelSpec


def describe(
  spec: ModelSpec,
  variables: dict[str, Any],
  batches: Iterable[dict[str, np.ndarray]],
  image_size: int,
  num_batches: int | None = None,
) -> dict[str, Any]:
  """Runs the jitted eval forward and activation capture over `batches`.

  Args:
    spec, variables: the model.
    batches: dicts with "image" [B, S, S, C] and "label" [B] (and "mask").
    image_size: S, for the profile.
    num_batches: stop after this many batches (None: all).

  Returns:
    A JSON-ready report: profile totals and layers, accuracy on the batches,
    per consumer its input shape and fraction of zeros (what APoZ counts),
    and the measured eval throughput (images/s, excluding compilation).
  """
  prof = profile.count(spec, image_size)
  forward = jax.jit(models.build(spec).apply)

  @jax.jit
  def zeros_per_consumer(variables, images, mask):
    """Sum over real examples of each consumer input's zero fraction."""
    captured = models.consumer_inputs(spec, variables, images)
    return {
      k: jnp.sum(jnp.mean(v == 0, axis=tuple(range(1, v.ndim))) * mask)
      for k, v in captured.items()
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
      captured = jax.eval_shape(
        lambda v, x: models.consumer_inputs(spec, v, x), variables, images
      )
      shapes = {k: list(v.shape) for k, v in captured.items()}
  if total == 0:
    raise ValueError("no examples to describe: the eval split is empty")
  return {
    "model": spec.to_dict(),
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
