"""Real (not masked) pruning: rebuild variables and spec with fewer channels.

`prune(spec, variables, group, keep, scales)` slices every leaf of a group
(paper section 3.1: "filters in layer i and channels of the next layer are
removed together"): the producer's kernel out-axis, bias, BatchNorm
scale/bias/mean/var, and the consumer's input channels, which it multiplies
by the least-squares `scales`. The returned spec has the new width, so
`models.build(spec)` applies the returned variables directly.

Removing nothing with unit scales is the identity; removing a channel whose
contribution is exactly a combination of the kept ones, with the
least-squares scales, changes no output. Both are tests. An optional
`shift` (`reconstruct.mean_shift`, centred reconstruction) is added to the
consumer's output: to its bias, or subtracted from its BatchNorm running
mean.

Example:

  >>> group = groups.get(spec, "conv3_1")
  >>> spec2, variables2 = surgery.prune(spec, variables, group, keep, scales)
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import groups as groups_lib
from thinet_jax.groups import Group
from thinet_jax.spec import ModelSpec


def _check_keep(keep: Any, width: int) -> np.ndarray:
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


def prune(
  spec: ModelSpec,
  variables: dict[str, Any],
  group: Group,
  keep: Any,
  scales: Any | None = None,
  shift: Any | None = None,
) -> tuple[ModelSpec, dict[str, Any]]:
  """Removes a group's channels outside `keep`; folds `scales` into the
  consumer.

  Args:
    spec: the model's spec.
    variables: its variables ({"params", "batch_stats"?}).
    group: a group of `spec` (`groups.get(spec, name)`).
    keep: sorted unique int [n] channels to keep.
    scales: [n] multipliers of the kept channels' consumer weights (least
      squares), default ones.
    shift: [D] added to the consumer's pre-activation output (centred
      reconstruction), default none.

  Returns:
    (spec with the group at width n, variables of the new shapes). The input
    variables are not modified.
  """
  current = groups_lib.get(spec, group.name)
  if current.width != group.width:
    raise ValueError(
      f"group {group.name} was taken from a spec where it had {group.width} "
      f"channels; this spec has {current.width}: call groups.get again"
    )
  keep = _check_keep(keep, group.width)
  n = keep.size
  # Scales and variables may be traced (prune under jit); keep may not.
  scales = jnp.ones(n, jnp.float32) if scales is None else jnp.asarray(scales)
  if scales.shape != (n,):
    raise ValueError(f"scales must have shape ({n},), got {scales.shape}")
  flat = flax.traverse_util.flatten_dict(
    {k: v for k, v in variables.items()}, sep="/"
  )
  missing = [leaf for leaf in group.param_leaves if leaf not in flat]
  if missing:
    raise KeyError(
      f"variables lack {missing} of group {group.name}: do they belong to "
      "this spec?"
    )
  out = dict(flat)
  for leaf in group.param_leaves[:-1]:  # Producer leaves: out axis last.
    out[leaf] = jnp.take(flat[leaf], keep, axis=-1)
  consumer = f"params/{group.consumer}/kernel"
  w = flat[consumer]
  s = scales.astype(w.dtype)
  if group.consumer_kind == "conv":  # [kh, kw, C, D]
    out[consumer] = jnp.take(w, keep, axis=2) * s[None, None, :, None]
  elif group.consumer_kind == "gap_dense":  # [C, D]
    out[consumer] = jnp.take(w, keep, axis=0) * s[:, None]
  else:  # flatten_dense: rows (h, w, c), c fastest.
    d = w.shape[-1]
    rows = w.reshape(-1, group.width, d)
    out[consumer] = (jnp.take(rows, keep, axis=1) * s[None, :, None]).reshape(
      -1, d
    )
  if shift is not None:
    _fold_shift(out, group, jnp.asarray(shift))
  new_spec = groups_lib.with_width(spec, group, n)
  return new_spec, flax.traverse_util.unflatten_dict(out, sep="/")


def _fold_shift(flat: dict[str, Any], group: Group, shift: jax.Array) -> None:
  """Adds `shift` to the consumer's output: to its bias, or (BatchNorm
  normalises y - mean) subtracted from its running mean."""
  if group.consumer_bn is not None:
    leaf, sign = f"batch_stats/{group.consumer_bn}/mean", -1.0
  else:
    leaf, sign = f"params/{group.consumer}/bias", 1.0
  if leaf not in flat:
    raise KeyError(f"cannot fold a mean shift: variables lack {leaf}")
  if shift.shape != flat[leaf].shape:
    raise ValueError(
      f"shift must have shape {flat[leaf].shape} (the consumer's outputs), "
      f"got {shift.shape}"
    )
  flat[leaf] = flat[leaf] + sign * shift.astype(flat[leaf].dtype)
