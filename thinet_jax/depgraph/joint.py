"""Joint sweeps: several groups pruned together in each of K variants.

  >>> per_group = {n: depgraph.collect(model, variables, model.group(n),
  ...                                  batches()) for n in names}
  >>> sw = depgraph.joint_sweep(model, variables, per_group,
  ...                           [{"conv1": 8, "conv2": 16}, ...], options)
  >>> logits = depgraph.evaluate_shared(model, variables, sw, x)  # [K, B, D]
  >>> stacked = depgraph.stack(model, variables, sw)      # to fine-tune
  >>> small_model, small = depgraph.materialize_joint(model, variables, sw, 0)

Every variant comes from the unpruned model's statistics: one removal
order per group, each kept set's own least squares and mean shift
(`step.fit`), the groups' masks composed. `evaluate_shared` runs the K
variants on the original kernels, scaling each consumer's input per
variant (the same as scaling its kernel rows), so they run as one
K-times larger batch; `stack` builds the K masked variables for a
vmapped fine-tune (`variants.finetune_variants`) with `param_masks`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import select
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.program import Literal, evaluate
from thinet_jax.depgraph.step import fit
from thinet_jax.depgraph.surgery import (
  add_shifts,
  flat_leaves,
  prune,
  prune_shapes,
  rank_of,
)
from thinet_jax.depgraph.sweep import masked, removal_order, row_factors
from thinet_jax.options import PruneOptions
from thinet_jax.stats import GroupStats


@dataclasses.dataclass(frozen=True)
class JointSweep:
  """K variants with several groups pruned together, all from the
  unpruned model's statistics: per variant k, each group's keep count,
  kept set (`keeps[k][group]`), per-consumer least-squares scales and
  mean shifts (`scales[k][group]`, `shifts[k][group]`) and mean relative
  error, plus the pruned model's shapes (`shapes[k]`, for counting its
  params and FLOPs). `stack` builds the K masked variables,
  `evaluate_shared` runs them on the original kernels, `param_masks`
  marks what fine-tuning must keep at zero, `materialize_joint` slices
  variant k."""

  names: list[str]
  counts: list[dict[str, int]]
  keeps: list[dict[str, np.ndarray]]
  scales: list[dict[str, dict]]
  shifts: list[dict[str, dict | None]]
  errors: list[dict[str, float]]
  shapes: list[Traced]


def uniform_counts(
  model: Traced, names: list[str], ratios: list[float]
) -> list[dict[str, int]]:
  """Per keep ratio, every named group's keep count at that ratio of its
  current width (`select.keep_count`): the `counts` of a uniform sweep."""
  widths = {n: model.width(model.group(n)) for n in names}
  return [
    {n: select.keep_count(w, r) for n, w in widths.items()} for r in ratios
  ]


def joint_sweep(
  model: Traced,
  variables: Any,
  per_group: dict[str, dict[str, GroupStats]],
  counts: list[dict[str, int]],
  options: PruneOptions = PruneOptions(mode="exhaustive"),
  keys: dict[str, jax.Array] | None = None,
) -> JointSweep:
  """Every group of `per_group` pruned at `counts[k][name]` channels in
  variant k: one removal order per group (the criterion's, as
  `prune_step`), each kept set's own least squares and mean shift, the
  groups' masks composed (each multiplies its consumers' input rows, so
  the groups do not interfere); a variant is the model the groups' steps
  would build one after another from these statistics."""
  options.check()
  keys = keys or {}
  names = list(per_group)
  widths = {n: model.width(model.group(n)) for n in names}
  for want in counts:
    for n in names:
      if not 1 <= want[n] <= widths[n]:
        raise ValueError(
          f"a variant keeps {want[n]} channels of {n}, which has "
          f"{widths[n]}; keep counts lie in [1, width]"
        )
  orders = {
    n: removal_order(
      model, variables, model.group(n), per_group[n], options, keys.get(n)
    )
    for n in names
  }  # fmt: skip
  sw = JointSweep(names, [dict(c) for c in counts], [], [], [], [], [])
  for want in counts:
    m, kept, scales, shifts, err = model, {}, {}, {}, {}
    for n in names:
      keep = np.asarray(select.keep_indices(orders[n], want[n]))
      scales[n], shifts[n], e = fit(per_group[n], keep, options)
      m = prune_shapes(m, m.group(n), keep)
      kept[n] = keep
      err[n] = float(np.mean([x["pruned"] for x in e.values()]))
    for field, value in zip(
      (sw.keeps, sw.scales, sw.shifts, sw.errors, sw.shapes),
      (kept, scales, shifts, err, m), strict=True,
    ):  # fmt: skip
      field.append(value)
  return sw


def _variant(model: Traced, variables: Any, sw: JointSweep, k: int) -> Any:
  for n in sw.names:
    variables = masked(
      model, variables, model.group(n), sw.keeps[k][n], sw.scales[k][n],
      sw.shifts[k][n],
    )  # fmt: skip
  return variables


def _stack(trees: list) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack(model: Traced, variables: Any, sw: JointSweep) -> Any:
  """The K masked variables, stacked on a leading axis
  (`evaluate_variants`, fine-tuning): the model's shapes, each removed
  channel's consumer rows zero, the kept rows scaled, shifts added."""
  return _stack(
    [_variant(model, variables, sw, k) for k in range(len(sw.counts))]
  )


def param_masks(model: Traced, variables: Any, sw: JointSweep) -> Any:
  """0/1 trees shaped like `stack(...)["params"]`: 0 at every consumer
  row a variant removed (what a masked fine-tune keeps at zero)."""
  ones = jax.tree.map(jnp.ones_like, variables)
  trees = []
  for k in range(len(sw.counts)):
    tree = ones
    for n in sw.names:
      unit = {c: np.ones(len(sw.keeps[k][n])) for c in sw.scales[k][n]}
      tree = masked(model, tree, model.group(n), sw.keeps[k][n], unit)
    trees.append(tree["params"])
  return _stack(trees)


def materialize_joint(
  model: Traced, variables: Any, sw: JointSweep, k: int, rescale: bool = True
) -> tuple[Traced, Any]:
  """Variant k as the real, smaller model: every group pruned in turn
  with its kept set, scales and shifts; `rescale=False` for variables
  that already carry them (a fine-tuned variant of `stack`)."""
  for n in sw.names:
    group = model.group(n)
    scales, shift = sw.scales[k][n], sw.shifts[k][n]
    if shift is not None:  # cut to the outputs other groups left
      by_name = {c.name: c for c in group.consumers}
      shift = {
        c: np.asarray(s)[model.mask(by_name[c].shift[0], 0)]
        for c, s in shift.items()
      }  # fmt: skip
    fold = (scales, shift) if rescale else (None, None)
    model, variables = prune(model, variables, group, sw.keeps[k][n], *fold)
  return model, variables


# --- shared-kernel evaluation -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shared:
  """What the K variants of a sweep change, for running them on the
  original kernels: `sites[i]` = (equation, input value id, channel
  axis) of a consumer whose input variant k multiplies by
  `factors[i][k]` (its kept channels' scales, 0 for removed ones, 1 for
  other groups' positions); `leaves` = leaf path -> [K, ...] of the
  leaves the mean shifts change (biases, running means)."""

  sites: tuple[tuple[int, int, int], ...]
  factors: tuple[np.ndarray, ...]
  leaves: dict[str, np.ndarray]


def _input_factors(model: Traced, sw: JointSweep, k: int, plan) -> dict:
  out: dict[tuple, np.ndarray] = {}
  for n in sw.names:
    group = model.group(n)
    _, rank = rank_of(model, group, sw.keeps[k][n])
    for c in group.consumers:
      index = c.index[plan.kept(c.input, c.axis)]
      site = (c.eqn, c.input, c.axis)
      factor = row_factors(index, rank, sw.scales[k][n][c.name])
      out[site] = out[site] * factor if site in out else factor
  return out


def shared(model: Traced, variables: Any, sw: JointSweep) -> Shared:
  """The `Shared` description of a sweep's variants (see `Shared`)."""
  _, plan = model.plan_for(model.example)
  per_variant = [
    _input_factors(model, sw, k, plan) for k in range(len(sw.counts))
  ]
  sites = tuple(per_variant[0])
  factors = tuple(
    np.stack([f[s] for f in per_variant]).astype(np.float32) for s in sites
  )
  base = flat_leaves(variables)
  changed = []
  for k in range(len(sw.counts)):
    leaves = dict(base)
    for n in sw.names:
      if sw.shifts[k][n] is not None:
        add_shifts(leaves, model.group(n), sw.shifts[k][n])
    changed.append({p: x for p, x in leaves.items() if x is not base[p]})
  paths = sorted(set().union(*changed))
  stacked = {
    p: np.stack([np.asarray(c.get(p, base[p])) for c in changed]) for p in paths
  }
  return Shared(sites, factors, stacked)


def shared_apply(
  model: Traced, variables: Any, sites, factors, leaves, *args: Any
) -> Any:
  """One variant on the original kernels: `model.apply(variables with
  `leaves` replaced, *args)`, each consumer's input multiplied by its
  factor along its channel axis (the same as scaling the consumer's
  kernel rows). Traceable; vmap over `factors` and `leaves` for all K."""
  program, plan = model.plan_for(args)
  at = {
    eqn: (value, axis, f)
    for (eqn, value, axis), f in zip(sites, factors, strict=True)
  }

  def inputs_of(i, eqn, values):
    if i not in at:
      return values
    value, axis, f = at[i]
    values = list(values)
    for j, atom in enumerate(eqn.inputs):
      if not isinstance(atom, Literal) and atom == value:
        shape = [1] * values[j].ndim
        shape[axis] = -1
        values[j] = values[j] * f.reshape(shape).astype(values[j].dtype)
    return values

  flat = flat_leaves(variables)
  flat.update(leaves)
  inputs = list(flat.values()) + jax.tree_util.tree_leaves(args)
  outs, _ = evaluate(
    program, inputs, params_of=plan.params_of, consts=plan.consts,
    inputs_of=inputs_of,
  )  # fmt: skip
  return jax.tree_util.tree_unflatten(program.out_def, outs)


def evaluate_shared(
  model: Traced, variables: Any, sw: JointSweep, *args: Any
) -> Any:
  """The K variants of `sw` on the same inputs, outputs [K, ...]: equal to
  `evaluate_variants(model, stack(model, variables, sw), *args)`, but the
  variants share the original kernels and only the consumers' inputs are
  scaled per variant, so the K forwards run as one K-times larger batch
  through the same convolutions (vmapping stacked kernels makes XLA run
  grouped convolutions instead). The removed producers still compute;
  nothing reads their outputs."""
  sh = shared(model, variables, sw)
  fn = jax.vmap(
    lambda f, leaves, *a: shared_apply(
      model, variables, sh.sites, f, leaves, *a
    ),
    in_axes=(0, 0) + (None,) * len(args),
  )
  return fn(sh.factors, sh.leaves, *args)
