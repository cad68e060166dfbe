"""Ratio sweeps on any traced model: K keep counts as K masked variants of
the same shapes, evaluated in one vmapped call.

  >>> per_consumer = depgraph.collect(model, variables, group, batches)
  >>> sw = depgraph.ratio_sweep(
  ...     model, variables, group, per_consumer, [8, 16, 24])
  >>> logits = depgraph.evaluate_variants(model, sw.stacked, x)   # [K, B, D]
  >>> small_model, small = depgraph.materialize(model, variables, group, sw, 1)

One removal order answers every count (`select`); each count gets its own
least-squares scales and (with `centred`) mean shifts from the same
`step.fit` the graph step applies, so a variant is exactly the model
`prune_step` would build: the consumers' kernel rows of the removed
channels are zero, the kept rows carry the scales, the shift sits in the
consumer's bias or normalisation mean. The removed channels then reach
nothing, so a variant's logits equal its materialised (sliced) model's,
and `errors` are the relative errors surgery realises.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import allocate as allocate_lib
from thinet_jax import select, solve
from thinet_jax.depgraph.cost import cost_model
from thinet_jax.depgraph.graph import Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.step import fit, producer_norms, selection_inputs
from thinet_jax.depgraph.surgery import (
  add_shifts,
  flat_leaves,
  prune,
  rank_of,
)
from thinet_jax.options import PruneOptions
from thinet_jax.stats import GroupStats


@dataclasses.dataclass(frozen=True)
class Sweep:
  """K settings of one group: kept sets (indices into the group's current
  channels), per-consumer scales and shifts, predicted mean relative
  errors, and the K masked variables stacked on a leading axis."""

  group: str
  counts: list[int]
  keeps: list[np.ndarray]
  scales: list[dict]
  shifts: list[dict | None]
  errors: list[float]
  stacked: Any


def row_factors(index: np.ndarray, rank: np.ndarray, scales) -> np.ndarray:
  """Per position (`index[p]`: its group channel, -1 for another group's),
  what a variant multiplies it by: the kept channel's scale, 0 for a
  removed one, 1 outside the group (`rank` from `rank_of`)."""
  factor = np.ones(len(index))
  ours = index >= 0
  r = rank[np.maximum(index, 0)]
  factor[ours & (r < 0)] = 0.0
  hit = ours & (r >= 0)
  factor[hit] = np.asarray(scales, np.float64)[r[hit]]
  return factor


def masked(
  model: Traced,
  variables: Any,
  group: Group,
  keep: np.ndarray,
  scales: dict,
  shift: dict | None = None,
) -> Any:
  """The variables of `prune(...)` at the original shapes: removed
  channels' consumer rows zero, kept rows scaled, shifts added."""
  _, rank = rank_of(model, group, keep)
  leaves = flat_leaves(variables)
  done = set()
  for c in group.consumers:
    if c.name in done:  # a layer applied twice: one kernel
      continue
    done.add(c.name)
    member = group.member(c.kernel, c.kernel_axis)
    index = member.index[model.mask(c.kernel, c.kernel_axis)]
    factor = row_factors(index, rank, scales[c.name])
    x = leaves[c.kernel]
    shape = [1] * x.ndim
    shape[c.kernel_axis] = len(index)
    leaves[c.kernel] = x * jnp.asarray(factor.reshape(shape), x.dtype)
  if shift is not None:
    add_shifts(leaves, group, shift)
  treedef = jax.tree_util.tree_structure(variables)
  return jax.tree_util.tree_unflatten(treedef, list(leaves.values()))


def ratio_sweep(
  model: Traced,
  variables: Any,
  group: Group,
  per_consumer: dict[str, GroupStats],
  counts: list[int],
  options: PruneOptions = PruneOptions(mode="exhaustive"),
  key: jax.Array | None = None,
) -> Sweep:
  """K keep counts of one group from one set of statistics (see module).

  Args:
    model, variables, group, per_consumer, options, key: as
      `depgraph.prune_step`.
    counts: channels kept per variant, each in [1, current width].
  """
  options.check()
  width = model.width(group)
  bad = [n for n in counts if not 1 <= n <= width]
  if bad:
    raise ValueError(f"counts {bad} are outside [1, {width}] for {group.name}")
  order = removal_order(model, variables, group, per_consumer, options, key)
  keeps, all_scales, shifts, errors, variants = [], [], [], [], []
  for n in counts:
    keep = np.asarray(select.keep_indices(order, n))
    scales, shift, err = fit(per_consumer, keep, options)
    keeps.append(keep)
    all_scales.append(scales)
    shifts.append(shift)
    errors.append(float(np.mean([e["pruned"] for e in err.values()])))
    variants.append(masked(model, variables, group, keep, scales, shift))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *variants)
  return Sweep(
    group.name, list(counts), keeps, all_scales, shifts, errors, stacked
  )


def evaluate_variants(model: Traced, stacked: Any, *args: Any) -> Any:
  """The K variants on the same inputs in one vmapped call: outputs with
  a leading axis K."""
  return jax.vmap(model.apply, in_axes=(0,) + (None,) * len(args))(
    stacked, *args
  )


def materialize(
  model: Traced, variables: Any, group: Group, sw: Sweep, k: int
) -> tuple[Traced, Any]:
  """Variant k as the real, smaller model (`depgraph.prune`)."""
  return prune(model, variables, group, sw.keeps[k], sw.scales[k], sw.shifts[k])


def removal_order(
  model: Traced,
  variables: Any,
  group: Group,
  per_consumer: dict[str, GroupStats],
  options: PruneOptions,
  key: jax.Array | None = None,
) -> np.ndarray:
  """The criterion's removal order of the group's current channels, as
  `prune_step` computes it (its last n are the kept set of n). A sweep
  scores the model it is given, so its norms are also the "original"."""
  key = jax.random.key(0) if key is None else key
  norms = producer_norms(model, variables, group)
  inputs = selection_inputs(per_consumer, norms, key, norms)
  return np.asarray(select.removal_order(options.criterion, inputs))


def error_curve(
  model: Traced,
  variables: Any,
  group: Group,
  per_consumer: dict[str, GroupStats],
  options: PruneOptions = PruneOptions(mode="exhaustive"),
  key: jax.Array | None = None,
) -> np.ndarray:
  """e(n) for n = 1..C: the `relative_error` `prune_step` would report for
  each keep count, from the same order and the same least-squares problem
  (centred or not, own-output or original target, ridge), all counts in
  one vmapped solve per consumer."""
  options.check()
  order = removal_order(model, variables, group, per_consumer, options, key)
  masks = solve.keep_masks(order, np.arange(1, len(order) + 1))
  curves = []
  for st in per_consumer.values():
    plain, centred = st.target(), st.target(centred=True)
    fit_on = centred if options.centred else plain
    weights = masks
    if options.least_squares:
      weights = solve.masked_scales(
        fit_on.gram, masks, options.ridge, fit_on.cross
      )
    if options.centred:  # the mean shift removes the rest of the mean
      e = solve.masked_errors(centred.gram, weights, *centred[1:])
      e = e * (centred.norm / plain.norm)
    else:
      e = solve.masked_errors(plain.gram, weights, *plain[1:])
    curves.append(np.asarray(e, np.float64))
  return np.mean(curves, axis=0)


def allocation(
  model: Traced,
  variables: Any,
  per_group: dict[str, dict[str, GroupStats]],
  target: float,
  *example: Any,
  metric: str = "flops",
  options: PruneOptions = PruneOptions(mode="exhaustive"),
  keys: dict[str, jax.Array] | None = None,
) -> tuple[dict[str, int], dict[str, np.ndarray]]:
  """Keep counts meeting `target` x the model's `metric` on `example`
  inputs, from every group's `error_curve` under `options`.

  Args:
    per_group: group name -> its `collect` statistics (of this model).
    keys: group name -> the selection key each step will use (the random
      criterion); default key(0) as `prune_step`.

  Returns:
    (name -> keep count, name -> error curve e(1..C)).
  """
  keys = keys or {}
  curves = {
    name: error_curve(
      model, variables, model.group(name), st, options, keys.get(name)
    )
    for name, st in per_group.items()
  }  # fmt: skip
  costs = cost_model(model, list(per_group), *example, metric=metric)
  return allocate_lib.allocate(curves, costs, target), curves
