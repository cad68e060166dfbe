"""Where a traced model stops being finite, named by layer.

`locate_nonfinite(model, variables, *args)` is the graph's counterpart of
`checks.locate_nonfinite` for any model: the first parameter holding a
NaN or inf; else the first equation of the traced program whose output
is not finite, named after the layer it belongs to (the module of a
parameter it reads, or the last such layer before it); else, when every
value is finite but a statistic computed from them overflowed, the
layer with the largest magnitude.

  >>> depgraph.locate_nonfinite(model, variables, images)
  'the output of conv1 (conv_general_dilated; first non-finite value)'
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from thinet_jax import checks
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.program import values as value_ids
from thinet_jax.depgraph.rules import leaf_of


def _layers(program, layer_names: dict[str, str]) -> list[str]:
  """Per equation, the layer it belongs to: the layer (`layer_names`: leaf
  path -> layer name) of a parameter it reads (through pass-through ops),
  else the previous equation's."""
  paths = dict(zip(program.leaf_ids, program.leaf_paths, strict=True))
  producers = program.producers()
  names, current = [], "the input"
  for eqn in program.eqns:
    for v in value_ids(eqn.inputs):
      leaf = leaf_of(program, v, producers)
      if leaf is not None:
        current = layer_names[paths[leaf]]
        break
    names.append(current)
  return names


def locate_nonfinite(model: Traced, variables: Any, *args: Any) -> str:
  """A phrase for an error message: where the model run on `args` first
  holds a NaN or inf (see the module docstring)."""
  found = checks.first_nonfinite(variables)
  if found is not None:
    return f"parameter {found[0]} ({found[1]} NaN/inf of {found[2]})"
  program, _ = model.plan_for(args)
  ids = [o for eqn in program.eqns for o in eqn.outputs]
  got = model.capture(variables, *args, values=ids)
  layers = _layers(program, model.graph.layer_names)
  largest = (0.0, None)
  for eqn, layer in zip(program.eqns, layers, strict=True):
    for o in eqn.outputs:
      x = np.asarray(got[o])
      if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        continue
      if not np.isfinite(x).all():
        return (
          f"the output of {layer} ({eqn.name}; first non-finite value)"
        )  # fmt: skip
      peak = float(np.max(np.abs(x)))
      if peak > largest[0]:
        largest = (peak, layer)
  if largest[1] is None:
    return "no layer output (every value is finite)"
  return (
    f"every value is finite, but the output of {largest[1]} reaches "
    f"|x| = {largest[0]:.3g}, so its statistics overflow float32 (a kernel "
    "or normalisation of extreme scale?)"
  )


def nonfinite_error(
  model: Traced, variables: Any, reference, what: str, args: tuple
) -> checks.NonFiniteError:
  """The error of statistics (`what`: which group, which batch) that are
  not finite, naming where the model (or its reference) breaks."""
  where = locate_nonfinite(model, variables, *args)
  if reference is not None and where.startswith("every value"):
    where += "; in the reference model, " + locate_nonfinite(
      reference[0], reference[1], *args
    )
  return checks.NonFiniteError(
    f"NaN or inf in {what}: {where}; check the model's variables and the data"
  )


def check_group(model: Traced, group: Any) -> None:
  """Raises ValueError unless `group` is one of `model.groups` (a group of
  another traced model indexes other channels)."""
  from thinet_jax.depgraph.graph import Group

  if not isinstance(group, Group):
    raise ValueError(
      f"group must be one of model.groups (a depgraph Group), got "
      f"{type(group).__name__}; use model.group(name)"
    )
  for g in model.groups:
    if g is group or (
      g.name == group.name
      and g.width == group.width
      and np.array_equal(g.channels, group.channels)
    ):
      return
  raise ValueError(
    f"group {group.name!r} is not one of this model's groups (was it taken "
    "from another traced model?); use model.group(name) of the model you "
    "prune"
  )


def check_variables(model: Traced, variables: Any) -> None:
  """Raises ValueError unless `variables` has exactly the leaves and
  shapes the (possibly pruned) `model` expects, naming the first one that
  is missing, extra or of another shape."""
  from thinet_jax.depgraph.cost import pruned_structs
  from thinet_jax.depgraph.surgery import flat_leaves

  def shapes(tree):
    return {p: tuple(np.shape(x)) for p, x in flat_leaves(tree).items()}

  want, got = shapes(pruned_structs(model)), shapes(variables)
  missing = [p for p in want if p not in got]
  extra = [p for p in got if p not in want]
  if missing or extra:
    what = (
      f"lack {missing[0]}" + (f" and {len(missing) - 1} more" if
                              len(missing) > 1 else "")
      if missing else
      f"hold {extra[0]}, which the model does not have"
    )  # fmt: skip
    raise ValueError(
      f"variables {what}: they are not this model's (pass the variables "
      "the model was traced with, or those its last prune returned)"
    )
  for p, shape in want.items():
    if got[p] != shape:
      raise ValueError(
        f"variables: {p} has shape {got[p]}, the model expects {shape} "
        "(variables of another width: pass those its last prune returned)"
      )


def keep_number(width: int, keep_ratio: Any, n_keep: Any) -> int:
  """The checked count of channels to keep: `n_keep` when given (an
  integer in [1, width]), else `select.keep_count(width, keep_ratio)`
  for a real keep_ratio in (0, 1]."""
  from thinet_jax import select

  if n_keep is not None:
    if isinstance(n_keep, bool) or not isinstance(n_keep, numbers.Integral):
      raise ValueError(
        f"n_keep must be an integer number of channels, got {n_keep!r}"
      )
    if not 1 <= n_keep <= width:
      raise ValueError(f"n_keep must be in [1, {width}], got {n_keep}")
    return int(n_keep)
  return select.keep_count(width, keep_ratio)
