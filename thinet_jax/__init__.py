"""thinet_jax: ThiNet filter pruning (Luo, Wu, Lin, ICCV 2017) in JAX/Flax.

The flat API, on any model the dependency graph reads (Flax Linen, NNX,
or a pure function of a variables pytree):

  >>> import thinet_jax as tj
  >>> model = tj.trace_linen(module, variables, x)        # or trace, trace_nnx
  >>> group = model.groups[0]                              # what can shrink
  >>> st = tj.collect(model, variables, group, batches)   # Gram statistics
  >>> model, variables, record = tj.prune_step(
  ...     model, variables, group, st, n_keep=32,
  ...     options=tj.PruneOptions(criterion="forward"))   # choose, fit, cut
  >>> logits = jax.jit(model.apply)(variables, x)          # the smaller model

Pieces, each a pure function: `collect` / `combine` (statistics),
`choose` / `removal_order` with the criteria in `CRITERIA`
(`register_criterion` adds one), `ridge_scales` / `relative_error` /
`mean_shift` (least squares), `masked_scales` / `error_curve` (every keep
count at once, traceable), `prune` (surgery); `prune_group` is collect +
prune_step; `ratio_sweep` evaluates K keep counts as masked variants in
one vmapped call. The layer-by-layer procedure with fine-tuning and resume is
`run_procedure` (`python -m train.prune --config.model=pkg.mod:factory`
runs it on your model); `factories.build` makes a trainable `Net` of any
Linen or NNX factory. The paper's VGG and ResNet live in `presets` /
`models` as `ModelSpec`s.
"""

from thinet_jax.depgraph import (
  Group,
  Traced,
  collect,
  combine,
  nnx_module,
  prune,
  prune_group,
  prune_step,
  ratio_sweep,
  trace,
  trace_linen,
  trace_nnx,
)
from thinet_jax.options import PruneOptions
from thinet_jax.procedure import plan, run_procedure
from thinet_jax.reconstruct import mean_shift, relative_error, ridge_scales
from thinet_jax.select import (
  CRITERIA,
  SelectionInputs,
  choose,
  keep_count,
  register_criterion,
  removal_order,
)
from thinet_jax.solve import error_curve, keep_masks, masked_scales

__version__ = "0.1.0"

__all__ = [
  "CRITERIA",
  "Group",
  "PruneOptions",
  "SelectionInputs",
  "Traced",
  "choose",
  "collect",
  "combine",
  "error_curve",
  "keep_count",
  "keep_masks",
  "masked_scales",
  "mean_shift",
  "nnx_module",
  "plan",
  "prune",
  "prune_group",
  "prune_step",
  "ratio_sweep",
  "register_criterion",
  "relative_error",
  "removal_order",
  "ridge_scales",
  "run_procedure",
  "trace",
  "trace_linen",
  "trace_nnx",
]
