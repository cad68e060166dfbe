"""Prune any JAX model: channel dependencies read from the traced computation.

  >>> from thinet_jax import depgraph
  >>> model = depgraph.trace_linen(module, variables, x)  # or trace, trace_nnx
  >>> print(model.graph.describe())                        # groups, left out
  >>> group = model.groups[0]
  >>> st = depgraph.collect(model, variables, group, batches)
  >>> model2, variables2 = depgraph.prune(model, variables, group, keep, scales)
  >>> logits = jax.jit(model2.apply)(variables2, x)        # the smaller model

Layers: `program` (the flat traced program and its evaluator), `rules`
(what each primitive ties together), `graph` (groups and what is left
out), `run` (the pruned program), `model` (entry points), `stats`
(consumers' Gram matrices), `surgery` (slicing and folding), `step`
(one ThiNet step: statistics, selection, least squares, surgery),
`sweep` (masked variants of one group, error curves, allocation), `joint`
(several groups in K variants, shared-kernel evaluation), `cost` (params and
FLOPs read off the program, the allocation's cost model).
"""

from thinet_jax.depgraph import cost
from thinet_jax.depgraph.checks import locate_nonfinite
from thinet_jax.depgraph.cost import cost_model, count
from thinet_jax.depgraph.graph import Consumer, Graph, Group, LeftOut, Member
from thinet_jax.depgraph.joint import (
  JointSweep,
  Shared,
  evaluate_shared,
  joint_sweep,
  materialize_joint,
  param_masks,
  shared,
  shared_apply,
  stack,
  uniform_counts,
)
from thinet_jax.depgraph.model import (
  Traced,
  nnx_module,
  trace,
  trace_linen,
  trace_nnx,
)
from thinet_jax.depgraph.refit import refit_kernels
from thinet_jax.depgraph.stats import collect, combine
from thinet_jax.depgraph.step import Record, prune_group, prune_step
from thinet_jax.depgraph.surgery import prune
from thinet_jax.depgraph.sweep import (
  Sweep,
  allocation,
  error_curve,
  evaluate_variants,
  materialize,
  ratio_sweep,
)

__all__ = [
  "Consumer",
  "Graph",
  "Group",
  "LeftOut",
  "Member",
  "Traced",
  "allocation",
  "collect",
  "cost",
  "cost_model",
  "count",
  "error_curve",
  "combine",
  "nnx_module",
  "prune",
  "prune_group",
  "prune_step",
  "Record",
  "Sweep",
  "evaluate_variants",
  "evaluate_shared",
  "locate_nonfinite",
  "joint_sweep",
  "JointSweep",
  "materialize_joint",
  "param_masks",
  "Shared",
  "shared",
  "shared_apply",
  "stack",
  "uniform_counts",
  "materialize",
  "ratio_sweep",
  "refit_kernels",
  "trace",
  "trace_linen",
  "trace_nnx",
]
