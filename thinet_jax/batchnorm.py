"""BatchNorm re-estimation: running averages recomputed after surgery.

Pruning changes what every BatchNorm after a pruned layer sees, so its
running mean and variance no longer describe its input. Re-estimation
runs the model in training mode over a few batches and replaces each
running average by the batch moments' mean (any model: a preset or a
`nets.Net` of a factory's, pruned or not). Models without BatchNorm, or
whose training mode changes no statistics, are returned unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import nets, sharding
from thinet_jax import progress as progress_lib
from thinet_jax.checkpoints import Model
from thinet_jax.nets import Net


def reestimate_batch_norm(
  spec: Model,
  variables: dict[str, Any],
  batches: Iterable[dict[str, np.ndarray]],
  max_batches: int | None = None,
  mesh=None,
  progress: bool = False,
) -> dict[str, Any]:
  """Every BatchNorm's running mean and variance, recomputed on `batches`.

  After surgery the running statistics of the layers downstream of a pruned
  group describe the unpruned network. This replaces them with the
  statistics of the current model on `batches` (no labels needed): for each
  BatchNorm, the mean of its per-batch means, and the mean of its per-batch
  variances plus the variance of the per-batch means (the population
  variance over equal batches). Each batch's moments come from one
  train-mode forward pass (BatchNorm normalising by batch statistics, as in
  training and in PyTorch's BN recalibration), read off the running
  averages updated from zero. Batches holding padding (a "mask" with
  zeros) are skipped: a train-mode BatchNorm cannot leave padding out.

  Args:
    spec, variables: the model; returned unchanged without BatchNorm.
    batches: dicts with "image" (and optionally "mask"), iterated once.
    max_batches: use at most this many (unpadded) batches.
    mesh: data mesh (default: every device); batches are split over it.
    progress: show a progress bar.

  Returns:
    variables with new "batch_stats"; "params" are the same objects.

  Raises:
    ValueError: no unpadded batch was seen.
  """
  if not variables.get("batch_stats"):
    return variables
  mesh = mesh or sharding.data_mesh()
  net = nets.of(spec)
  zero = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  one = jax.tree.map(jnp.ones_like, variables["batch_stats"])

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def moments(params, batch):
    def update(start):
      v = {**variables, "params": params, "batch_stats": start}
      return net.train(v, batch["image"], jax.random.key(0))[1]

    from_zero = update(zero)  # (1 - m) * batch moment
    if net.bn_rate is not None:
      rate = jax.tree.map(lambda _: net.bn_rate, from_zero)
    else:  # Each layer's 1 - m, from one more update starting at ones.
      rate = jax.tree.map(lambda a, b: 1.0 - (b - a), from_zero, update(one))
    mask = batch.get("mask", jnp.ones(batch["image"].shape[:1]))
    return jax.tree.map(lambda v, r: v / r, from_zero, rate), jnp.all(mask > 0)

  flat = flax.traverse_util.flatten_dict(variables["batch_stats"], sep="/")
  sums = {k: np.zeros(v.shape, np.float64) for k, v in flat.items()}
  square_means = {
    k: np.zeros_like(sums[k]) for k in sums if k.endswith("/mean")
  }
  n = 0
  it = progress_lib.bar(
    batches, total=progress_lib.length(batches, max_batches),
    desc="BN statistics", unit="batch", disable=not progress,
  )  # fmt: skip
  for batch in it:
    if max_batches is not None and n >= max_batches:
      break
    if n == 0 and _stats_unchanged(net, variables, batch["image"]):
      return variables  # its training mode keeps the running averages
    batch_moments, unpadded = moments(
      variables["params"], sharding.shard_batch(batch, mesh)
    )
    if not bool(unpadded):
      continue
    for k, v in flax.traverse_util.flatten_dict(batch_moments, sep="/").items():
      v = np.asarray(v, np.float64)
      sums[k] += v
      if k in square_means:
        square_means[k] += v**2
    n += 1
  if n == 0:
    raise ValueError(
      "no unpadded batch to re-estimate BatchNorm statistics on: give at "
      "least one full batch (batch_size <= the number of images)"
    )
  new = {}
  for k, v in flat.items():
    mean = sums[k] / n
    if k.endswith("/var"):
      batch_means = k[: -len("var")] + "mean"
      spread = square_means[batch_means] / n - (sums[batch_means] / n) ** 2
      mean = mean + np.maximum(spread, 0.0)
    new[k] = jnp.asarray(mean, v.dtype)
  return {
    **variables,
    "batch_stats": flax.traverse_util.unflatten_dict(new, sep="/"),
  }


def _stats_unchanged(net: Net, variables, images) -> bool:
  """Whether the model's training function returns no BatchNorm
  statistics (a factory model without a `train` argument)."""
  out = jax.eval_shape(
    lambda v, x: net.train(v, x, jax.random.key(0))[1], variables, images
  )
  return out is None
