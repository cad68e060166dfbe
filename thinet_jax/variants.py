"""Masked variants evaluated and fine-tuned together (training layer).

A sweep's K variants (`depgraph.joint_sweep`) share the model's shapes,
so one jitted `vmap` evaluates them all (`evaluate_variants` on the
stacked variables of `depgraph.stack`; `evaluate_shared` on the original
kernels with per-variant input scales), and one vmapped train step
fine-tunes them all (`finetune_variants`): the optimizer is wrapped in
`keep_pruned_zero`, an Optax transform that zeroes the gradients and
updates of pruned entries, so momentum never builds up on them and they
stay exactly zero.

  >>> results = variants.evaluate_shared(spec, traced, variables, sw,
  ...                                    eval_batches())
  >>> stacked = depgraph.stack(traced, variables, sw)
  >>> tuned, history = variants.finetune_variants(
  ...     spec, stacked, depgraph.param_masks(traced, variables, sw), data,
  ...     tx, 100)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thinet_jax import depgraph, nets, train
from thinet_jax import progress as progress_lib
from thinet_jax.checkpoints import Model


@functools.lru_cache(maxsize=16)
def _vmapped_eval(model: Model):
  return jax.jit(jax.vmap(train.make_eval_step(model), in_axes=(0, None)))


def evaluate_variants(
  model: Model,
  stacked: dict[str, Any],
  batches: Iterable[dict[str, np.ndarray]],
  mesh=None,
) -> list[dict[str, float]]:
  """Accuracy, top-5 and loss of every variant: one vmapped call a batch."""
  mesh = mesh or train.data_mesh()
  step = _vmapped_eval(model)
  return _sum_variants(
    model, (step(stacked, train.shard_batch(b, mesh)) for b in batches)
  )


@functools.lru_cache(maxsize=16)
def _shared_eval(net: nets.Net, traced: depgraph.Traced, sites: tuple):
  """The jitted vmapped eval step of shared-kernel variants, one per model
  and set of consumer sites (a sweep's criteria and seeds reuse it)."""

  def infer(v, images):
    return depgraph.shared_apply(traced, v[0], sites, v[1], v[2], images)

  return jax.jit(
    jax.vmap(
      train.make_eval_step(dataclasses.replace(net, infer=infer)),
      in_axes=((None, 0, 0), None),
    )
  )


def evaluate_shared(
  model: Model,
  traced: depgraph.Traced,
  variables: dict[str, Any],
  sw: depgraph.JointSweep,
  batches: Iterable[dict[str, np.ndarray]],
  mesh=None,
) -> list[dict[str, float]]:
  """`evaluate_variants` of `depgraph.stack(traced, variables, sw)`
  without stacking: every variant shares the original kernels and only
  the consumers' inputs are scaled per variant (`depgraph.shared_apply`),
  so the K forwards run as one K-times larger batch through the same
  convolutions (vmapping stacked kernels makes XLA run grouped
  convolutions instead).

  Args:
    model: the preset's spec or the Net (for its class count).
    traced: its traced inference function (`factories.graph_of`), the
      one the sweep was planned on.
  """
  mesh = mesh or train.data_mesh()
  sh = depgraph.shared(traced, variables, sw)
  net = nets.of(model)
  step = _shared_eval(net, traced, sh.sites)
  shared = (variables, sh.factors, sh.leaves)
  return _sum_variants(
    net, (step(shared, train.shard_batch(b, mesh)) for b in batches)
  )


def _sum_variants(model: Model, sums_per_batch) -> list[dict[str, float]]:
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
    if nets.of(model).num_classes > 5:
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
  model: Model, tx: optax.GradientTransformation, seed: int = 0
):
  """step(states [K], masks [K], batch) -> (states, metrics [K]): one
  training step of every variant on the same batch, vmapped."""

  def step(states, masks, batch):
    def one(state, mask):
      inner = train.make_train_step(model, masked_optimizer(tx, mask), seed)
      return inner(state, batch)

    return jax.vmap(one)(states, masks)

  return step


def finetune_variants(
  model: Model,
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
  step = jax.jit(make_variants_step(model, tx, seed), donate_argnums=0)
  it = iter(batches)
  history = []
  for _ in progress_lib.bar(
    range(steps), desc="fine-tune variants", disable=not progress
  ):
    states, metrics = step(states, masks, train.shard_batch(next(it), mesh))
    history.append({k: np.asarray(v).tolist() for k, v in metrics.items()})
  return train.variables_of(states), history
