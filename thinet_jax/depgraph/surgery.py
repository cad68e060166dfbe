"""Generic surgery: slice every member of a group, fold scales and shifts.

`prune(model, variables, group, keep, scales, shift)` removes the group's
channels outside `keep` from every parameter axis that carries them (the
producers' kernels and biases, normalisation scale/bias/mean/var, every
consumer's input axis, depthwise kernels, gates, concatenated consumers at
their offsets), multiplies each consumer's kept input rows by its
least-squares scales and adds its mean shift to the consumer's bias (or
subtracts it from the running mean of the normalisation after it). It
returns the new `Traced` model (its `apply` runs the smaller variables)
and the new variables; `model.widths` maps each producer to its width.

`keep` indexes the group's *current* channels (all of them before any
pruning of this group): sorted, unique, at least one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax.depgraph.checks import check_group, check_variables
from thinet_jax.depgraph.graph import Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.program import path_name


def check_keep(keep: Any, width: int) -> np.ndarray:
  """`keep` as sorted unique int indices in [0, width), or a clear error."""
  keep = np.asarray(keep)
  if keep.ndim != 1 or keep.size < 1:
    raise ValueError(f"keep must list at least one channel, got {keep!r}")
  if not np.issubdtype(keep.dtype, np.integer):
    raise ValueError(f"keep must hold integer indices, got dtype {keep.dtype}")
  if keep.min() < 0 or keep.max() >= width:
    raise ValueError(f"keep indices must lie in [0, {width}), got {keep}")
  if np.any(np.diff(keep) <= 0):
    raise ValueError(f"keep must be sorted and unique, got {keep}")
  return keep


def _per_consumer(value, group: Group, what: str) -> dict:
  if value is None:
    return {}
  if isinstance(value, dict):
    unknown = set(value) - {c.name for c in group.consumers}
    if unknown:
      names = ", ".join(c.name for c in group.consumers)
      raise ValueError(
        f"{what} for unknown consumers {sorted(unknown)}; group {group.name} "
        f"has {names}"
      )
    return value
  return {c.name: value for c in group.consumers}


def add_shifts(
  leaves: dict[str, Any],
  group: Group,
  shifts: dict,
  sliced: dict[str, np.ndarray] | None = None,
) -> None:
  """Adds each consumer's mean shift [D] to its output (its bias, or minus
  its normalisation's running mean), in place in `leaves`; once per
  kernel (a layer applied twice is one consumer).

  sliced: leaf path -> which of its positions the same surgery kept, for
  a consumer that writes the group it reads (`x = relu(conv(x)) + x`: its
  bias lost the removed channels, so its shift [D] is cut to the kept
  ones first).
  """
  shifted = set()
  for c in group.consumers:
    if c.name in shifted or shifts.get(c.name) is None:
      continue
    shifted.add(c.name)
    if c.shift is None:
      raise ValueError(
        f"consumer {c.name} has no bias and no normalisation after it to "
        "take a mean shift"
      )
    path, sign = c.shift
    delta = np.asarray(shifts[c.name])
    if (
      sliced is not None
      and path in sliced
      and delta.size != np.size(leaves[path])
    ):
      delta = delta[sliced[path]]
    delta = jnp.asarray(delta)
    leaves[path] = leaves[path] + sign * delta.reshape(
      leaves[path].shape
    ).astype(leaves[path].dtype)


def flat_leaves(variables: Any) -> dict[str, Any]:
  with_paths, _ = jax.tree_util.tree_flatten_with_path(variables)
  return {path_name(p): x for p, x in with_paths}


def prune(
  model: Traced,
  variables: Any,
  group: Group,
  keep: Any,
  scales: Any = None,
  shift: Any = None,
) -> tuple[Traced, Any]:
  """Removes a group's channels outside `keep` (see module docstring).

  Args:
    model: the traced model (`depgraph.trace*`), possibly already pruned.
    variables: its current variables.
    group: one of `model.groups`.
    keep: sorted int [n] of the group's current channels to keep.
    scales: [n] multipliers of each consumer's kept input rows, or a dict
      consumer name -> [n]; default ones. A layer applied more than once
      is one consumer (one kernel, one name, one scale vector).
    shift: a dict consumer name -> [D] (or one [D] for every consumer) to
      add to the consumer's output; consumers without a bias or a
      following normalisation cannot take one (error).

  Returns:
    (pruned model, pruned variables).
  """
  check_group(model, group)
  check_variables(model, variables)
  keep, rank = rank_of(model, group, keep)
  scales = _per_consumer(scales, group, "scales")
  shifts = _per_consumer(shift, group, "shift")
  leaves = flat_leaves(variables)
  masks = dict(model.masks)
  sliced = {}  # leaf path -> kept positions of its (last) sliced axis
  factors: dict[tuple[str, int], np.ndarray] = {}
  for c in group.consumers:
    if c.name in scales:
      if c.kernel is None:
        raise ValueError(
          f"consumer {c.name}'s kernel is computed, not a parameter: scales "
          "cannot be folded"
        )
      w = np.asarray(scales[c.name], np.float64)
      if w.shape != keep.shape:
        raise ValueError(
          f"scales for {c.name} have shape {w.shape}, keep has {keep.shape}"
        )
      factors[(c.kernel, c.kernel_axis)] = w
  for m in group.members:
    if m.path not in leaves:
      raise ValueError(
        f"variables have no leaf {m.path}: they do not match the traced model"
      )
    now = model.mask(m.path, m.axis)
    index = m.index[now]  # group channel of every current position
    x = leaves[m.path]
    if x.shape[m.axis] != len(index):
      raise ValueError(
        f"{m.path} has {x.shape[m.axis]} positions on axis {m.axis}; the "
        f"model expects {len(index)}"
      )
    w = factors.get((m.path, m.axis))
    if w is not None:
      mult = np.ones(len(index))
      hit = (index >= 0) & (rank[np.maximum(index, 0)] >= 0)
      mult[hit] = w[rank[index[hit]]]
      shape = [1] * x.ndim
      shape[m.axis] = len(index)
      x = x * jnp.asarray(mult.reshape(shape), x.dtype)
    stay = _stay(index, rank)
    leaves[m.path] = jnp.take(x, jnp.asarray(np.flatnonzero(stay)), axis=m.axis)
    sliced[m.path] = stay
    _narrow(masks, m, now, stay, x.ndim)
  add_shifts(leaves, group, shifts, sliced)
  treedef = jax.tree_util.tree_structure(variables)
  order = [
    path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(variables)[0]
  ]
  new_variables = jax.tree_util.tree_unflatten(
    treedef, [leaves[p] for p in order]
  )
  return _after(model, group, masks, len(keep)), new_variables


def rank_of(model: Traced, group: Group, keep: Any):
  """(checked keep, rank [group width]: a kept channel's place, else -1)."""
  alive = np.flatnonzero(model.current(group))
  keep = check_keep(keep, len(alive))
  rank = np.full(group.width, -1)
  rank[alive[keep]] = np.arange(len(keep))
  return keep, rank


def _stay(index: np.ndarray, rank: np.ndarray) -> np.ndarray:
  """Which current positions of a member stay (outside the group or kept)."""
  return (index < 0) | (rank[np.maximum(index, 0)] >= 0)


def _narrow(masks: dict, m, now: np.ndarray, stay: np.ndarray, ndim: int):
  new = now.copy()
  new[np.flatnonzero(now)[~stay]] = False
  axes = list(masks.get(m.path, (None,) * ndim))
  axes[m.axis] = new
  masks[m.path] = tuple(axes)


def _after(model: Traced, group: Group, masks: dict, width: int) -> Traced:
  widths = dict(model.widths)
  widths.update({p: width for p in group.producers})
  return model.replace(masks=masks, widths=widths)


def prune_shapes(model: Traced, group: Group, keep: Any) -> Traced:
  """The model `prune` returns, without variables: only the kept masks
  change (for counting the cost of a kept set)."""
  keep, rank = rank_of(model, group, keep)
  masks = dict(model.masks)
  program = model.graph.program
  leaves = zip(program.leaf_paths, program.leaf_ids, strict=True)
  ndim = {p: len(program.shapes[v]) for p, v in leaves}
  for m in group.members:
    now = model.mask(m.path, m.axis)
    _narrow(masks, m, now, _stay(m.index[now], rank), ndim[m.path])
  return _after(model, group, masks, len(keep))
