"""Ratio sweeps: K keep ratios as K masked variants in one vmapped call.

A criterion's removal order answers every keep count at once (`select`): the
kept set of n channels is the order's last n. A sweep over K settings
therefore needs the statistics once, and the K pruned models differ only in
which channels are zeroed. Here each setting becomes a *masked variant* of
the original model, same shapes: a pruned channel's producer filter, bias and
BatchNorm scale/bias are zeroed (so it outputs exactly 0), and the consumer's
input channels are multiplied by the least-squares scales, 0 where pruned.
The K variants stack along a leading axis, and one jitted `jax.vmap`-ed
forward evaluates them all (docs/design.md, "Ratio sweeps under vmap").

Per group, with order o (removal order), rank r[c] = position of c in o and
keep count n:

    mask[c]   = 1 if r[c] >= C - n else 0        (the last n of the order)
    scale     = argmin_w |yhat - xhat (mask * w)|^2      (eq. 6, on the kept)

computed from the Gram matrix G for every n in one vmapped solve (see
`masked_scales`). `error_curve` gives the relative reconstruction error
e(n) for n = 1..C (`allocate` turns curves into per-group keep counts).
`materialize` turns any variant into the real, smaller model by surgery;
its logits equal the variant's. Evaluating and fine-tuning the variants
together is the training layer's (`thinet_jax.variants`); this module
imports no training loop and no Optax.

Example:

  >>> group_stats = {n: stats.collect(spec, variables, groups.get(spec, n),
  ...                                 batches(), key=key) for n in names}
  >>> sw = sweep.plan(spec, variables, group_stats, [0.3, 0.5, 0.7])
  >>> results = variants.evaluate_sweep(spec, variables, sw, eval_batches())
  >>> stacked = sweep.stack_variants(spec, variables, sw)  # to fine-tune
  >>> spec2, variables2 = sweep.materialize(spec, variables, sw, k=1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import groups as groups_lib
from thinet_jax import profile, select, surgery
from thinet_jax.allocate import CostModel, allocate  # noqa: F401 (public)
from thinet_jax.solve import (  # noqa: F401 (the sweep's public names)
  error_curve,
  keep_masks,
  masked_errors,
  masked_scales,
)
from thinet_jax.spec import ModelSpec
from thinet_jax.stats import GroupStats

# --- a sweep: K settings of a set of groups ---------------------------------


@dataclasses.dataclass(frozen=True)
class Sweep:
  """K pruning settings of the same groups, from one set of statistics.

  Attributes:
    names: the groups, in network order.
    widths: their original widths.
    consumers: their consumers' parameter paths.
    counts: int [K, G] kept channels per variant and group.
    orders: name -> int [C] removal order of the criterion.
    masks: name -> [K, C] 0/1 kept channels.
    scales: name -> [K, C] consumer scales (least squares or 1 where kept,
      0 where pruned).
    criterion: the criterion that made the orders.
  """

  names: tuple[str, ...]
  widths: tuple[int, ...]
  consumers: tuple[str, ...]
  counts: np.ndarray
  orders: dict[str, np.ndarray]
  masks: dict[str, np.ndarray]
  scales: dict[str, np.ndarray]
  criterion: str

  @property
  def size(self) -> int:
    return int(self.counts.shape[0])

  def kept(self, k: int, name: str) -> np.ndarray:
    """Sorted kept channels of group `name` in variant k."""
    return np.flatnonzero(self.masks[name][k]).astype(np.int32)

  def variant_spec(self, spec: ModelSpec, k: int) -> ModelSpec:
    """The spec of variant k's materialised model."""
    for name, n in zip(self.names, self.counts[k], strict=True):
      spec = groups_lib.with_width(spec, groups_lib.get(spec, name), int(n))
    return spec

  def costs(self, spec: ModelSpec, image_size: int) -> list[dict[str, int]]:
    """Params and FLOPs of every variant's materialised model."""
    out = []
    for k in range(self.size):
      prof = profile.count(self.variant_spec(spec, k), image_size)
      out.append({"params": prof["params"], "flops": prof["flops"]})
    return out


def keep_count_table(
  widths: Sequence[int], ratios: Sequence[float] | Sequence[Sequence[float]]
) -> np.ndarray:
  """int [K, G] keep counts: `select.keep_count` of each width and ratio.

  ratios: K shared ratios, or K rows of one ratio per group.
  """
  rows = []
  for r in ratios:
    per_group = list(r) if isinstance(r, Sequence) else [r] * len(widths)
    if len(per_group) != len(widths):
      raise ValueError(
        f"a row of {len(per_group)} keep ratios for {len(widths)} groups; "
        "give one ratio per variant or one per group"
      )
    rows.append(
      [select.keep_count(c, x) for c, x in zip(widths, per_group, strict=True)]
    )
  return np.asarray(rows, np.int32).reshape(len(rows), len(widths))


def plan(
  spec: ModelSpec,
  variables: dict[str, Any],
  group_stats: Mapping[str, GroupStats],
  ratios: Sequence[float] | Sequence[Sequence[float]] | None = None,
  *,
  counts: Any = None,
  criterion: str = "thinet",
  least_squares: bool = True,
  ridge: float = 0.0,
  key: jax.Array | None = None,
) -> Sweep:
  """Orders, kept sets and scales of K settings of the groups in
  `group_stats` (collected on this `spec` and `variables`).

  Args:
    spec, variables: the model (every group at its original width).
    group_stats: name -> `stats.collect` result, in network order.
    ratios: K keep ratios (shared), or K rows of one per group; or
    counts: int [K, G] keep counts instead.
    criterion: a name in `select.CRITERIA`.
    least_squares: rescale the kept channels; else scales 1.
    ridge: ridge term of the least squares.
    key: PRNG key for the random criterion (folded with the group index).
  """
  names = tuple(group_stats)
  all_groups = [groups_lib.get(spec, n) for n in names]
  widths = tuple(g.width for g in all_groups)
  if (ratios is None) == (counts is None):
    raise ValueError("give either ratios or counts")
  if counts is None:
    counts = keep_count_table(widths, ratios)
  counts = np.asarray(counts, np.int32)
  if counts.ndim != 2 or counts.shape[1] != len(names):
    raise ValueError(
      f"counts must be [K, {len(names)}] (one per variant and group), got "
      f"{counts.shape}"
    )
  bad = (counts < 1) | (counts > np.asarray(widths)[None, :])
  if bad.any():
    k, g = np.argwhere(bad)[0]
    raise ValueError(
      f"variant {k} keeps {counts[k, g]} channels of {names[g]}, which has "
      f"{widths[g]}; keep counts lie in [1, width]"
    )
  key = jax.random.key(0) if key is None else key
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  orders, masks, scales = {}, {}, {}
  for g, (name, group) in enumerate(zip(names, all_groups, strict=True)):
    st = group_stats[name]
    if st.gram.shape != (group.width, group.width):
      raise ValueError(
        f"statistics of {name} are [{st.gram.shape[0]}, ...] but the group "
        f"has {group.width} channels: collect them on this model"
      )
    inputs = select.SelectionInputs.of(
      st, params[f"{group.producer}/kernel"], jax.random.fold_in(key, g)
    )
    gram = inputs.gram
    order = select.removal_order(criterion, inputs)
    mask = keep_masks(order, counts[:, g])
    orders[name] = np.asarray(order)
    masks[name] = np.asarray(mask)
    scales[name] = np.asarray(
      masked_scales(gram, mask, ridge) if least_squares else mask
    )
  consumers = tuple(g.consumer for g in all_groups)
  return Sweep(
    names, widths, consumers, counts, orders, masks, scales, criterion
  )


# --- masked variants --------------------------------------------------------


def _group_factors(
  spec: ModelSpec, sw: Sweep, with_scales: bool
) -> dict[str, tuple[np.ndarray, str]]:
  """leaf path -> (factor [K, C], axis kind): what multiplies each leaf."""
  factors: dict[str, list] = {}
  for name in sw.names:
    group = groups_lib.get(spec, name)
    mask = sw.masks[name]
    for leaf in group.param_leaves[:-1]:
      if not leaf.startswith("batch_stats/"):
        factors.setdefault(leaf, []).append((mask, "out"))
    consumer = group.param_leaves[-1]
    weight = sw.scales[name] if with_scales else mask
    factors.setdefault(consumer, []).append((weight, group.consumer_kind))
  return factors


def _apply_factor(leaf: jax.Array, factor: jax.Array, kind: str) -> jax.Array:
  """leaf [K, ...] times factor [K, C] along the group's channel axis."""
  k = factor.shape[0]
  if kind == "out":  # Producer leaves: channels last.
    return leaf * factor.reshape(k, *([1] * (leaf.ndim - 2)), -1)
  if kind == "conv":  # Consumer kernel [K, kh, kw, C, D].
    return leaf * factor[:, None, None, :, None]
  if kind == "gap_dense":  # [K, C, D]
    return leaf * factor[:, :, None]
  c = factor.shape[1]  # flatten_dense [K, H*W*C, D], rows (h, w, c).
  d = leaf.shape[-1]
  rows = leaf.reshape(k, -1, c, d) * factor[:, None, :, None]
  return rows.reshape(k, -1, d)


def _stacked_tree(spec, variables, sw: Sweep, with_scales: bool, ones: bool):
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  factors = _group_factors(spec, sw, with_scales)
  out = {}
  for path, value in flat.items():
    value = jnp.asarray(value)
    if ones:
      value = jnp.ones_like(value)
    leaf = jnp.broadcast_to(value, (sw.size, *value.shape))
    for factor, kind in factors.get(path, []):
      leaf = _apply_factor(leaf, jnp.asarray(factor, leaf.dtype), kind)
    out[path] = leaf
  return flax.traverse_util.unflatten_dict(out, sep="/")


def stack_variants(
  spec: ModelSpec, variables: dict[str, Any], sw: Sweep
) -> dict[str, Any]:
  """The K masked variants as one pytree, every leaf [K, ...].

  Pruned channels: producer kernel, bias and BatchNorm scale/bias zeroed
  (the channel outputs exactly 0), consumer input weights zeroed; kept
  consumer input weights multiplied by their scales. BatchNorm running
  statistics are left as they are (they meet a zero scale).
  """
  return _stacked_tree(spec, variables, sw, with_scales=True, ones=False)


def param_masks(
  spec: ModelSpec, variables: dict[str, Any], sw: Sweep
) -> dict[str, Any]:
  """0/1 pytree shaped like the stacked `params`: 0 at every pruned entry."""
  tree = {"params": variables["params"]}
  return _stacked_tree(spec, tree, sw, with_scales=False, ones=True)["params"]


def variant(stacked: Any, k: int) -> Any:
  """Variant k of a stacked pytree."""
  return jax.tree.map(lambda x: x[k], stacked)


def materialize(
  spec: ModelSpec, variables: dict[str, Any], sw: Sweep, k: int
) -> tuple[ModelSpec, dict[str, Any]]:
  """Variant k as a real smaller model: surgery on every group in turn,
  with its kept channels and scales; same logits as `variant(stacked, k)`
  in eval mode."""
  for name in sw.names:
    keep = sw.kept(k, name)
    scales = sw.scales[name][k][keep]
    group = groups_lib.get(spec, name)
    spec, variables = surgery.prune(spec, variables, group, keep, scales)
  return spec, variables


def materialize_variables(
  spec: ModelSpec, stacked: dict[str, Any], sw: Sweep, k: int
) -> tuple[ModelSpec, dict[str, Any]]:
  """A (fine-tuned) masked variant as a real smaller model: surgery with
  unit scales, since the variant's consumer weights already carry them."""
  variables = variant(stacked, k)
  for name in sw.names:
    group = groups_lib.get(spec, name)
    spec, variables = surgery.prune(spec, variables, group, sw.kept(k, name))
  return spec, variables


# --- budget allocation ------------------------------------------------------


def cost_model(
  spec: ModelSpec, names: Sequence[str], image_size: int, metric: str = "flops"
) -> CostModel:
  """The `CostModel` of `metric` ("flops" or "params") for a preset's
  groups: `depgraph.cost_model` on its traced program."""
  from thinet_jax import depgraph, factories

  traced = factories.graph_of(spec, image_size)
  example = factories.example(spec, image_size)
  return depgraph.cost_model(traced, names, example, metric=metric)


def masked_errors_of(
  sw: Sweep, group_stats: Mapping[str, GroupStats], k: int
) -> dict[str, float]:
  """name -> relative reconstruction error of variant k's kept set and
  scales, on the statistics' samples."""
  return {
    n: float(
      masked_errors(
        np.asarray(group_stats[n].gram, np.float32), sw.scales[n][k][None]
      )[0]
    )
    for n in sw.names
  }
