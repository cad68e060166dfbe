"""Entry points: a traced model of any pure function, Flax Linen or NNX.

  >>> model = depgraph.trace(fn, variables, x)          # fn(variables, x)
  >>> model = depgraph.trace_linen(module, variables, x, train=False)
  >>> model, variables = depgraph.trace_nnx(nnx_module, x)
  >>> [g.name for g in model.groups]
  >>> model.apply(variables, x)                        # runs, pruned or not

A `Traced` model holds the function, the original variables' shapes, the
dependency graph of one trace and the pruned state (kept masks in the
original coordinates). `depgraph.prune` returns a new `Traced` beside the
new variables; `Traced.apply` is then the pruned model (jit, grad,
jax.export). Keyword arguments of the model (`train=False`, a `method`)
are closed over: the traced function is `fn(variables, *arrays)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph import run as run_lib
from thinet_jax.depgraph.graph import Graph, Group, LeftOut


@dataclasses.dataclass(frozen=True, eq=False)
class Traced:
  """A model as the dependency graph sees it (see module docstring).

  fn: `fn(variables, *args)`; structs: the original variables' shapes and
  dtypes; graph: of the trace at `example` shapes; masks: leaf path -> kept
  mask per axis (original coordinates), empty when nothing is pruned;
  widths: module path -> current output width of every pruned producer;
  example: the traced arguments; nnx_graphdef: the NNX graph definition
  (`trace_nnx`), else None.
  """

  fn: Callable
  structs: Any
  graph: Graph
  masks: dict = dataclasses.field(default_factory=dict)
  widths: dict = dataclasses.field(default_factory=dict)
  example: tuple = ()
  nnx_graphdef: Any = None

  def __post_init__(self):
    first = (
      (run_lib.arg_key(self.example), self.graph) if self.example else None
    )
    object.__setattr__(
      self, "_runner", run_lib.Runner(self.fn, self.structs, self.masks, first)
    )

  @property
  def groups(self) -> list[Group]:
    return self.graph.groups

  @property
  def left_out(self) -> list[LeftOut]:
    return self.graph.left_out

  def group(self, name: str) -> Group:
    return self.graph.group(name)

  def apply(self, variables: Any, *args: Any) -> Any:
    """The model on (possibly pruned) variables: jit, grad, jax.export."""
    if not self.masks:
      return self.fn(variables, *args)
    return self._runner(variables, *args)

  def plan_for(self, args: tuple) -> tuple:
    """(program, pruned plan) of the trace at these arguments' shapes."""
    return self._runner.plan_for(args)

  def capture(self, variables: Any, *args: Any, values: Any = ()) -> dict:
    """Intermediate values of the (pruned) model by value id (e.g. a
    consumer's `input` and `output`), traceable; ids are those of
    `model.graph.program`, whatever the batch size."""
    program, plan = self.plan_for(args)
    flat = jax.tree_util.tree_leaves(variables) + jax.tree_util.tree_leaves(
      args
    )
    _, got = program_lib.evaluate(
      program, flat, values, plan.params_of, plan.consts
    )
    return got

  def current(self, group: Group) -> np.ndarray:
    """Which of the group's original channels are still there (bool)."""
    removed = run_lib.removed_channels(self.graph, self.masks)
    return ~removed[group.channels]

  def width(self, group: Group) -> int:
    return int(self.current(group).sum())

  def mask(self, path: str, axis: int) -> np.ndarray:
    """Kept mask of one leaf axis (original coordinates)."""
    axes = self.masks.get(path)
    if axes is None or axes[axis] is None:
      leaf = self.graph.program.leaf_paths.index(path)
      n = self.graph.program.shapes[self.graph.program.leaf_ids[leaf]][axis]
      return np.ones(n, bool)
    return axes[axis]

  def replace(self, **changes) -> Traced:
    return dataclasses.replace(self, **changes)


def _structs(variables: Any) -> Any:
  return jax.tree_util.tree_map(program_lib.struct, variables)


def trace(fn: Callable, variables: Any, *example: Any) -> Traced:
  """The dependency graph of `fn(variables, *example)`, any pure function
  of a variables pytree and array arguments (no model changes, no sow).

  The channels of `example`'s leaves (the model's inputs) and of the
  outputs are never pruned. Trace the inference-mode function (BatchNorm
  with running averages) that returns what is to be preserved (logits).
  """
  structs = _structs(variables)
  program = program_lib.make_program(fn, structs, *example)
  return Traced(fn, structs, Graph(program), example=tuple(example))


def trace_linen(
  module: Any, variables: Any, *example: Any, method: Any = None, **kwargs: Any
) -> Traced:
  """`trace` of a Flax Linen module's `apply(variables, *example,
  **kwargs)` (any names, nesting, setup or compact, batch_stats).

  kwargs are fixed (e.g. `train=False`); `method` as in `Module.apply`.
  """

  def fn(v, *args):
    return module.apply(v, *args, method=method, **kwargs)

  return trace(fn, variables, *example)


def trace_nnx(module: Any, *example: Any, **kwargs: Any) -> tuple[Traced, Any]:
  """`trace` of a Flax NNX module called as `module(*example, **kwargs)`.

  Returns (model, state): the module split with `nnx.split`; the model's
  function merges the state back and calls it. `nnx_module(model, state)`
  builds the smaller NNX module after pruning.
  """
  from flax import nnx

  graphdef, state = nnx.split(module)

  def fn(s, *args):
    return nnx.merge(graphdef, s)(*args, **kwargs)

  traced = trace(fn, state, *example)
  return traced.replace(nnx_graphdef=graphdef), state


def nnx_module(model: Traced, state: Any) -> Any:
  """A pruned NNX module: the graphdef merged with the smaller state, and
  the standard layers' size attributes set from their new arrays (Conv,
  Linear, BatchNorm, LayerNorm, GroupNorm). Its own `__call__` runs when
  the module's code reads sizes only from its arrays; `model.apply(state,
  x)` always runs."""
  from flax import nnx

  if model.nnx_graphdef is None:
    raise ValueError("nnx_module needs a model traced with trace_nnx")
  module = nnx.merge(model.nnx_graphdef, state)
  for _, layer in nnx.iter_graph(module):
    if isinstance(layer, nnx.Conv):
      k = layer.kernel[...]
      groups = layer.feature_group_count
      if 1 < groups == layer.in_features and k.shape[-2] == 1:
        multiplier = layer.out_features // layer.in_features
        layer.feature_group_count = k.shape[-1] // multiplier  # depthwise
      layer.in_features = k.shape[-2] * layer.feature_group_count
      layer.out_features = k.shape[-1]
    elif isinstance(layer, nnx.Linear):
      layer.in_features, layer.out_features = layer.kernel[...].shape
    elif isinstance(layer, (nnx.BatchNorm, nnx.LayerNorm)):
      leaf = layer.scale if layer.scale is not None else layer.mean
      layer.num_features = leaf[...].shape[-1]
    elif isinstance(layer, nnx.GroupNorm) and layer.scale is not None:
      # the graph prunes whole normalisation groups: their size stays
      layer.num_groups = layer.scale[...].shape[-1] // layer.group_size
  return module
