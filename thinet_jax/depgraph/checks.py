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

from typing import Any

import numpy as np

from thinet_jax import checks
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.program import values as value_ids
from thinet_jax.depgraph.rules import leaf_of


def _layers(program, names: dict[str, str]) -> list[str]:
  """Per equation, the layer it belongs to: the layer (`names`: leaf path
  -> layer name) of a parameter it reads (through pass-through ops), else
  the previous equation's."""
  paths = dict(zip(program.leaf_ids, program.leaf_paths, strict=True))
  producers = program.producers()
  names, current = [], "the input"
  for eqn in program.eqns:
    for v in value_ids(eqn.inputs):
      leaf = leaf_of(program, v, producers)
      if leaf is not None:
        current = names[paths[leaf]]
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
