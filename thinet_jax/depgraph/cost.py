"""Params and FLOPs of any traced model, pruned or not, and the exact cost
model budget allocation spends.

`count(model, *example)` reads the (pruned) traced program: parameters are
the leaves of the variables' "params" collection (all leaves when the
variables are not a dict of collections), FLOPs are 2 per multiply-add of
every convolution and dot product (the kernel's full window at every
output position, as `profile.count` counts the presets).
`cost_model(model, names, *example)` fits `allocate.CostModel` from counts
with one or two channels removed: exact, since every such layer costs its
input width x output width x a constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from thinet_jax.allocate import CostModel
from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.surgery import prune_shapes

METRICS = ("flops", "params")


def pruned_structs(model: Traced) -> Any:
  """The variables' shapes and dtypes after the model's pruning."""
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(model.structs)
  leaves = []
  for path, s in with_paths:
    name = program_lib.path_name(path)
    shape = tuple(int(model.mask(name, a).sum()) for a in range(len(s.shape)))
    leaves.append(jax.ShapeDtypeStruct(shape, s.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def count(model: Traced, *example: Any) -> dict[str, int]:
  """{"params", "flops"} of the (pruned) model on `example` arguments
  (arrays or ShapeDtypeStructs; FLOPs scale with their batch)."""
  structs = pruned_structs(model)
  params = (
    structs.get("params", structs) if isinstance(structs, dict) else structs
  )
  n_params = sum(
    int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(params)
  )
  example = tuple(program_lib.struct(x) for x in example)
  program, plan = model.plan_for(example)
  macs = 0
  for eqn in program.eqns:
    if eqn.name not in ("conv_general_dilated", "dot_general"):
      continue
    lhs, rhs = program_lib.values(eqn.inputs)[:2]
    out = int(np.prod(plan.new_shape(eqn.outputs[0])))
    if eqn.name == "conv_general_dilated":
      kernel = plan.new_shape(rhs)
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      macs += out * int(np.prod(kernel)) // max(out_features, 1)
    else:
      (contract, _), _ = eqn.params["dimension_numbers"]
      shape = plan.new_shape(lhs)
      macs += out * int(np.prod([shape[a] for a in contract]))
  return {"params": n_params, "flops": 2 * macs}


def layers(model: Traced, *example: Any) -> list[dict[str, Any]]:
  """Per-layer rows of the (pruned) model on `example`: every convolution
  and dense layer that reads a parameter kernel, in program order.

  Each row: name (the kernel's layer name, `graph.layer_names`), kind
  ("conv" / "dense"), kernel (window..., in, out), stride, output (the
  output's shape less the batch axis, channels last), params (the
  kernel's) and flops (as `count`).
  """
  from thinet_jax.depgraph import rules

  example = tuple(program_lib.struct(x) for x in example)
  program, plan = model.plan_for(example)
  producers = program.producers()
  paths = dict(zip(program.leaf_ids, program.leaf_paths, strict=True))
  names = model.graph.layer_names
  rows = []
  for eqn in program.eqns:
    if eqn.name not in ("conv_general_dilated", "dot_general"):
      continue
    lhs, rhs = program_lib.values(eqn.inputs)[:2]
    leaf = rules.leaf_of(program, rhs, producers)
    if leaf is None:
      continue
    out_shape = plan.new_shape(eqn.outputs[0])
    kernel = plan.new_shape(rhs)
    if eqn.name == "conv_general_dilated":
      _, k_spec, o_spec = eqn.params["dimension_numbers"]
      window = [kernel[a] for a in k_spec[2:]]
      shape = (*window, kernel[k_spec[1]], kernel[k_spec[0]])
      output = (*[out_shape[a] for a in o_spec[2:]], out_shape[o_spec[1]])
      stride = int(eqn.params["window_strides"][0])
      macs = int(np.prod(out_shape)) * int(np.prod(kernel)) // max(shape[-1], 1)
      kind = "conv"
    else:
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs_shape = plan.new_shape(lhs)
      n_in = int(np.prod([lhs_shape[a] for a in contract]))
      shape = (n_in, int(np.prod(kernel)) // max(n_in, 1))
      output = tuple(out_shape[1:])
      stride = 1
      macs = int(np.prod(out_shape)) * n_in
      kind = "dense"
    rows.append({
      "name": names[paths[leaf]], "kind": kind, "kernel": list(shape),
      "stride": stride, "output": list(output),
      "params": int(np.prod(kernel)), "flops": 2 * macs,
    })  # fmt: skip
  return rows


def cost_model(
  model: Traced, names: Sequence[str], *example: Any, metric: str = "flops"
) -> CostModel:
  """The `CostModel` of `metric` for the named groups of `model` at their
  current widths: counted with nothing removed, one channel removed from
  each group, two (when a group has three or more), and one from each
  pair of groups."""
  if metric not in METRICS:
    raise ValueError(f'metric must be "flops" or "params", got {metric!r}')
  names = tuple(names)
  groups = [model.group(n) for n in names]
  widths = np.array([model.width(g) for g in groups])

  def at(*removed: int) -> float:
    m = model
    for g in set(removed):
      n = removed.count(g)
      m = prune_shapes(m, groups[g], np.arange(m.width(groups[g]) - n))
    return float(count(m, *example)[metric])

  base = at()
  n = len(names)
  linear = np.array([base - at(g) if widths[g] > 1 else 0.0 for g in range(n)])
  pairs = np.zeros((n, n))
  for g in range(n):
    if widths[g] > 2:
      pairs[g, g] = at(g, g) - base + 2 * linear[g]
    for h in range(g + 1, n):
      if widths[g] > 1 and widths[h] > 1:
        b = at(g, h) - base + linear[g] + linear[h]
        pairs[g, h] = pairs[h, g] = b
  return CostModel(names, widths, base, linear, pairs)
