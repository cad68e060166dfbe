"""Masked variants evaluated and fine-tuned together (training layer).

A sweep's K variants (`sweep.plan`, `sweep.stack_variants`) share the
model's shapes, so one jitted `vmap` evaluates them all
(`evaluate_variants` on stacked variables; `evaluate_sweep` with the
shared kernel and only per-variant channel scales), and one vmapped train
step fine-tunes them all (`finetune_variants`): the optimizer is wrapped
in `keep_pruned_zero`, an Optax transform that zeroes the gradients and
updates of pruned entries, so momentum never builds up on them and they
stay exactly zero.

  >>> results = variants.evaluate_sweep(spec, variables, sw, eval_batches())
  >>> stacked = sweep.stack_variants(spec, variables, sw)
  >>> tuned, history = variants.finetune_variants(
  ...     spec, stacked, sweep.param_masks(spec, variables, sw), data, tx, 100)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from thinet_jax import models, train
from thinet_jax import progress as progress_lib
from thinet_jax.spec import ModelSpec
from thinet_jax.sweep import Sweep, variant  # noqa: F401


@functools.lru_cache(maxsize=16)
def _vmapped_eval(spec: ModelSpec):
  return jax.jit(jax.vmap(train.make_eval_step(spec), in_axes=(0, None)))


def evaluate_variants(
  spec: ModelSpec,
  stacked: dict[str, Any],
  batches: Iterable[dict[str, np.ndarray]],
  mesh=None,
) -> list[dict[str, float]]:
  """Accuracy, top-5 and loss of every variant: one vmapped call a batch."""
  mesh = mesh or train.data_mesh()
  step = _vmapped_eval(spec)
  return _sum_variants(
    spec, (step(stacked, train.shard_batch(b, mesh)) for b in batches)
  )


def channel_scales(sw: Sweep) -> dict[str, Any]:
  """The `channel_scales` collection of the K variants: for every group's
  consumer, its input scales [K, C] (least squares where kept, 0 where
  pruned), nested like the consumer's parameter path."""
  flat = {
    consumer + models.SCALE_SUFFIX: jnp.asarray(sw.scales[name])
    for name, consumer in zip(sw.names, sw.consumers, strict=True)
  }
  return flax.traverse_util.unflatten_dict(flat, sep="/")


@functools.lru_cache(maxsize=16)
def _scaled_eval(spec: ModelSpec):
  step = train.make_eval_step(spec)

  def one(params_and_stats, scales, batch):
    return step({**params_and_stats, models.CHANNEL_SCALES: scales}, batch)

  return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


def evaluate_sweep(
  spec: ModelSpec,
  variables: dict[str, Any],
  sw: Sweep,
  batches: Iterable[dict[str, np.ndarray]],
  mesh=None,
) -> list[dict[str, float]]:
  """`evaluate_variants` of `stack_variants(spec, variables, sw)` without
  stacking: every variant shares the original kernels, and only the
  consumers' input channels are scaled per variant (`channel_scales`), so
  the K forwards run as one K-times larger batch through the same convs
  (vmapping stacked kernels instead makes XLA run grouped convolutions).
  The pruned producers still compute, but nothing reads their outputs."""
  mesh = mesh or train.data_mesh()
  step = _scaled_eval(spec)
  scales = channel_scales(sw)
  return _sum_variants(
    spec,
    (step(variables, scales, train.shard_batch(b, mesh)) for b in batches),
  )


def _sum_variants(spec: ModelSpec, sums_per_batch) -> list[dict[str, float]]:
  totals = None
  for sums in sums_per_batch:
    sums = {
      k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()
    }
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
  if totals is None:
    raise ValueError("no eval batches")
  out = []
  for k in range(len(totals["count"])):
    n = max(totals["count"][k], 1.0)
    row = {
      "accuracy": totals["top1"][k] / n,
      "loss": totals["loss"][k] / n,
      "examples": int(totals["count"][k]),
    }
    if spec.num_classes > 5:
      row["top5"] = totals["top5"][k] / n
    out.append(row)
  return out


def keep_pruned_zero(mask: Any) -> optax.GradientTransformation:
  """Multiplies updates by a 0/1 `mask` pytree (shaped like the params).

  Chained before and after an optimizer (`masked_optimizer`), pruned
  entries get no gradient, no momentum, no weight decay and no update, so
  they stay exactly zero.
  """

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    return jax.tree.map(
      lambda u, m: u * m.astype(u.dtype), updates, mask
    ), state

  return optax.GradientTransformation(init, update)


def masked_optimizer(
  tx: optax.GradientTransformation, mask: Any
) -> optax.GradientTransformation:
  """`tx` on the unpruned entries only (see `keep_pruned_zero`)."""
  return optax.chain(keep_pruned_zero(mask), tx, keep_pruned_zero(mask))


def init_variant_states(
  stacked: dict[str, Any], masks: Any, tx: optax.GradientTransformation
) -> train.TrainState:
  """Stacked `TrainState`s [K, ...] for `finetune_variants`."""

  def one(variables, mask):
    return train.create_state(variables, masked_optimizer(tx, mask))

  return jax.vmap(one)(stacked, masks)


def make_variants_step(
  spec: ModelSpec, tx: optax.GradientTransformation, seed: int = 0
):
  """step(states [K], masks [K], batch) -> (states, metrics [K]): one
  training step of every variant on the same batch, vmapped."""

  def step(states, masks, batch):
    def one(state, mask):
      inner = train.make_train_step(spec, masked_optimizer(tx, mask), seed)
      return inner(state, batch)

    return jax.vmap(one)(states, masks)

  return step


def finetune_variants(
  spec: ModelSpec,
  stacked: dict[str, Any],
  masks: Any,
  batches: Iterable[dict[str, np.ndarray]],
  tx: optax.GradientTransformation,
  steps: int,
  seed: int = 0,
  progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, list[float]]]]:
  """`steps` training steps of all K variants in one compiled step.

  Returns:
    (fine-tuned stacked variables, per-step {"loss", "accuracy"} lists).
  """
  mesh = train.data_mesh()
  # The step donates its states: copy, so the caller's arrays survive.
  states = init_variant_states(jax.tree.map(jnp.array, stacked), masks, tx)
  step = jax.jit(make_variants_step(spec, tx, seed), donate_argnums=0)
  it = iter(batches)
  history = []
  for _ in progress_lib.bar(
    range(steps), desc="fine-tune variants", disable=not progress
  ):
    states, metrics = step(states, masks, train.shard_batch(next(it), mesh))
    history.append({k: np.asarray(v).tolist() for k, v in metrics.items()})
  return train.variables_of(states), history
