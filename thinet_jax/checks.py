"""Finite checks that name the tensor at fault.

A NaN or inf in a model is found where it enters: `first_nonfinite` names
the first parameter path holding one (checked whenever a model is loaded),
and `locate_nonfinite` runs the model on a batch and names the first layer
whose output is not finite, or, when every activation is finite but a
statistic computed from them overflowed, the layer with the largest
activation. Evaluation, statistics and training call these so their errors
name a tensor instead of printing a number computed from NaN.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


class NonFiniteError(FloatingPointError):
  """NaN or inf where a finite value is needed; the message names where."""


def first_nonfinite(tree: Any) -> tuple[str, int, int] | None:
  """(path, non-finite count, size) of the first leaf holding a NaN or an
  inf, in path order, or None if every leaf is finite."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda kv: _name(kv[0])):
    value = np.asarray(leaf)
    if not np.issubdtype(value.dtype, np.floating):
      continue
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    if bad:
      return _name(path), bad, int(np.size(value))
  return None


def check_finite(tree: Any, what: str) -> None:
  """Raises NonFiniteError naming the first non-finite leaf of `tree`."""
  found = first_nonfinite(tree)
  if found is not None:
    path, bad, size = found
    raise NonFiniteError(
      f"{what}: parameter {path} has {bad} NaN/inf of {size} entries; the "
      "model is broken (a diverged run, a bad conversion?): use another "
      "checkpoint"
    )


def locate_nonfinite(spec, variables: dict[str, Any], images) -> str:
  """Where a forward pass on `images` first stops being finite.

  Returns a phrase for an error message: the first parameter that is not
  finite, else the first layer (in call order) whose output is not, else,
  when every output is finite (a statistic of them overflowed), the layer
  with the largest magnitude.
  """
  from thinet_jax import nets

  found = first_nonfinite(variables.get("params", {}))
  if found is not None:
    return f"parameter {found[0]} ({found[1]} NaN/inf of {found[2]})"
  net = nets.of(spec)
  if net.outputs is None:
    return "no parameter (every parameter is finite)"
  outputs = net.outputs(variables, np.asarray(images))
  for name, v in outputs:
    if not np.isfinite(v).all():
      return f"the output of {name} (first non-finite activation)"
  if not outputs:
    return "no layer output (every activation is finite)"
  name, v = max(outputs, key=lambda nv: float(np.max(np.abs(nv[1]))))
  return (
    f"every activation is finite, but the output of {name} reaches "
    f"|x| = {float(np.max(np.abs(v))):.3g}, so its statistics overflow "
    "float32 (a kernel or BatchNorm of extreme scale?)"
  )


def in_call_order(tree, prefix: str):
  """(layer path, output) of captured intermediates in the order the layers
  ran: dicts keep insertion order, and a module's own output is recorded
  after its children's (`jax.tree` would sort the names instead).
  Traceable: the outputs are passed through as they are."""
  for key, value in tree.items():
    if key == "__call__":
      for v in value:
        yield prefix or "the model", v
    else:
      yield from in_call_order(value, f"{prefix}/{key}" if prefix else key)


def _name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
