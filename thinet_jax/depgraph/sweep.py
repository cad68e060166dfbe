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

from thinet_jax import select
from thinet_jax.depgraph.graph import Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.step import fit, producer_norms, selection_inputs
from thinet_jax.depgraph.surgery import add_shifts, flat_leaves, prune
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
  alive = np.flatnonzero(model.current(group))
  rank = np.full(group.width, -1)
  rank[alive[keep]] = np.arange(len(keep))
  leaves = flat_leaves(variables)
  done = set()
  for c in group.consumers:
    if c.name in done:  # a layer applied twice: one kernel
      continue
    done.add(c.name)
    member = group.member(c.kernel, c.kernel_axis)
    index = member.index[model.mask(c.kernel, c.kernel_axis)]
    factor = np.ones(len(index))
    ours = index >= 0
    r = rank[np.maximum(index, 0)]
    factor[ours & (r < 0)] = 0.0
    hit = ours & (r >= 0)
    factor[hit] = np.asarray(scales[c.name], np.float64)[r[hit]]
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
  key = jax.random.key(0) if key is None else key
  inputs = selection_inputs(
    per_consumer, producer_norms(model, variables, group), key
  )
  order = select.removal_order(options.criterion, inputs)
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
