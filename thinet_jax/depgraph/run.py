"""Running a pruned model: the traced computation re-evaluated with the new
shapes.

Flax checks a layer's parameter shapes against its attributes
(`ScopeParamShapeError`), so a Linen module cannot apply smaller variables.
Rather than intercepting a fixed list of Flax layers, the pruned model runs
the traced program itself: the function is traced again with the
*original* shapes and the given arguments' shapes (so any batch size
works), every axis position whose channel was removed is dropped, and
each equation is bound again with the parameters that carry shapes
rewritten (`reshape`'s sizes, `broadcast_in_dim`'s shape, `split` sizes,
`slice` bounds, a depthwise convolution's `feature_group_count`) and its
constants sliced. This works for any function the graph reads (Linen,
NNX, plain JAX), runs exactly the computation that was analysed, and is
an ordinary JAX function: `jit`, `grad` and `jax.export` apply.

The pruned state is a set of kept masks in the original model's
coordinates: leaf path -> one boolean array (or None) per axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph.graph import Graph
from thinet_jax.depgraph.program import Eqn, Program

Masks = dict[str, tuple]


def removed_channels(graph: Graph, masks: Masks) -> np.ndarray:
  """Boolean over the graph's channel ids (one more, False, at the end:
  the id -1 of positions outside every channel): removed by `masks`."""
  ids = dict(zip(graph.program.leaf_paths, graph.program.leaf_ids, strict=True))
  removed = np.zeros(graph.channel_count + 1, bool)
  for path, axes in masks.items():
    for a, mask in enumerate(axes):
      if mask is not None:
        removed[graph.channels_of(ids[path], a)[~mask]] = True
  removed[-1] = False
  return removed


class Plan:
  """The pruned program of one trace: new parameters and constants."""

  def __init__(self, graph: Graph, masks: Masks):
    self.program = program = graph.program
    self.stats_fns: dict = {}  # jitted statistics of this trace (stats.py)
    removed = removed_channels(graph, masks)
    self._kept: dict[tuple[int, int], np.ndarray] = {}

    def kept(v: int, a: int) -> np.ndarray:
      key = (v, a)
      if key not in self._kept:
        comp = graph.channels_of(v, a)
        self._kept[key] = ~removed[comp]
      return self._kept[key]

    self.kept = kept
    self.new_shape = lambda v: tuple(  # noqa: E731
      int(kept(v, a).sum()) for a in range(len(program.shapes[v]))
    )
    self.params = {}
    for i, eqn in enumerate(program.eqns):
      changed = any(
        self.new_shape(v) != program.shapes[v]
        for v in program_lib.values(eqn.inputs) + list(eqn.outputs)
      )
      if changed:
        self.params[i] = _new_params(self, eqn)
    self.consts = {
      v: _take(c, [kept(v, a) for a in range(np.ndim(c))])
      for v, c in program.consts.items()
    }

  def params_of(self, i: int, eqn: Eqn, values) -> dict:
    return self.params.get(i, eqn.params)


def _take(x, masks):
  for a, m in enumerate(masks):
    if not m.all():
      x = np.take(np.asarray(x), np.flatnonzero(m), axis=a)
  return x


def _new_params(plan: Plan, eqn: Eqn) -> dict:
  p = dict(eqn.params)
  out = eqn.outputs[0]
  name = eqn.name
  if name == "reshape":
    p["new_sizes"] = plan.new_shape(out)
  elif name == "broadcast_in_dim":
    p["shape"] = plan.new_shape(out)
  elif name == "split":
    p["sizes"] = tuple(plan.new_shape(o)[p["axis"]] for o in eqn.outputs)
  elif name == "slice":
    x = eqn.inputs[0]
    starts, limits = [], []
    for a, start in enumerate(p["start_indices"]):
      s = int(plan.kept(x, a)[:start].sum())
      starts.append(s)
      limits.append(s + plan.new_shape(out)[a])
    p["start_indices"], p["limit_indices"] = tuple(starts), tuple(limits)
  elif name == "conv_general_dilated" and p["feature_group_count"] > 1:
    lhs = eqn.inputs[0]
    feature = p["dimension_numbers"][0][1]
    cin = plan.program.shapes[lhs][feature]
    if cin == p["feature_group_count"]:  # depthwise: one group per channel
      p["feature_group_count"] = plan.new_shape(lhs)[feature]
  elif name == "dynamic_slice":
    p["slice_sizes"] = plan.new_shape(out)
  elif name in ("iota", "random_bits"):
    p["shape"] = plan.new_shape(out)
  return p


class Runner:
  """`runner(variables, *args)`: the pruned function (see module doc).

  Traces are cached per argument shapes; under `jit` the tracing happens
  once per compilation.
  """

  def __init__(
    self, fn: Callable, structs: Any, masks: Masks, first: tuple | None = None
  ):
    self.fn = fn
    self.structs = structs
    self.masks = masks
    self._plans: dict[Any, tuple[Program, Plan]] = {}
    if first is not None:
      key, graph = first
      self._plans[key] = (graph.program, Plan(graph, masks))

  def plan_for(self, args) -> tuple[Program, Plan]:
    key = arg_key(args)
    if key not in self._plans:
      specs = jax.tree_util.tree_map(program_lib.struct, args)
      program = program_lib.make_program(self.fn, self.structs, *specs)
      self._plans[key] = (program, Plan(Graph(program), self.masks))
    return self._plans[key]

  def __call__(self, variables, *args):
    program, plan = self.plan_for(args)
    flat = jax.tree_util.tree_leaves(variables) + jax.tree_util.tree_leaves(
      args
    )
    outs, _ = program_lib.evaluate(
      program, flat, params_of=plan.params_of, consts=plan.consts
    )
    return jax.tree_util.tree_unflatten(program.out_def, outs)


def arg_key(args) -> Any:
  leaves, treedef = jax.tree_util.tree_flatten(args)
  return treedef, tuple(
    (np.shape(x), str(program_lib.struct(x).dtype)) for x in leaves
  )
