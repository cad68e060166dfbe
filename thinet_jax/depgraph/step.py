"""One ThiNet step on any traced model: selection, least squares, surgery.

  >>> per_consumer = depgraph.collect(model, variables, group, batches)
  >>> model, variables, record = depgraph.prune_step(
  ...     model, variables, group, per_consumer, n_keep=32)
  >>> # or both at once:
  >>> model, variables, record = depgraph.prune_group(
  ...     model, variables, group, batches, keep_ratio=0.5)

`prune_step` is the pure part (statistics in, variables and a record out;
no data, no I/O, no training); `prune_group` collects the statistics
first. Selection runs on the group's combined problem (`stats.combine`:
the sum of the consumers' relative errors) with any criterion registered
in `select.CRITERIA`; each consumer then gets its own least-squares
scales from its own Gram matrix (and, with `centred`, its own mean shift),
folded into its kernel. One consumer is the paper's rule exactly, with the
same options as `pipeline.prune_group` (`options.PruneOptions`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from thinet_jax import reconstruct, select
from thinet_jax.checks import NonFiniteError
from thinet_jax.depgraph import refit as refit_lib
from thinet_jax.depgraph.checks import check_group, check_variables, keep_number
from thinet_jax.depgraph.graph import Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.stats import collect, combine
from thinet_jax.depgraph.surgery import flat_leaves, prune
from thinet_jax.options import PruneOptions
from thinet_jax.stats import GroupStats


@dataclasses.dataclass(frozen=True)
class Record:
  """What one step did (JSON-ready via `dataclasses.asdict`).

  kept: the kept channels, indices into the group's channels before the
  step; scales: consumer -> its kept channels' scales; errors: consumer
  -> relative reconstruction error of its output as pruned (scales and
  shift applied) on the statistics' samples; relative_error (and
  _unscaled, _centred): their mean over consumers, as pruned, with unit
  scales, and what is left once every output channel's mean is corrected
  (the definitions of `pipeline.PruneRecord`); refit: the option;
  refitted: the consumers whose kernels were refitted
  (`depgraph.refit_kernels`; their errors are the refit's, over every
  position of the batches, and they have no scales).
  """

  group: str
  criterion: str
  least_squares: bool
  ridge: float
  centred: bool
  target: str
  width_before: int
  width_after: int
  kept: list[int]
  scales: dict[str, list[float]]
  errors: dict[str, float]
  relative_error: float
  relative_error_unscaled: float
  relative_error_centred: float
  samples: int
  images: int
  refit: str = "scales"
  refitted: list[str] = dataclasses.field(default_factory=list)

  @property
  def keep(self) -> np.ndarray:
    return np.asarray(self.kept, np.int32)


def original_norms(
  model: Traced, group: Group, reference: tuple[Traced, Any] | None
) -> np.ndarray | None:
  """[C] `producer_norms` of the unpruned `reference` model's filters, at
  the group's current channels: what `weight_sum_original` ranks."""
  if reference is None:
    return None
  ref_model, ref_variables = reference
  norms = producer_norms(ref_model, ref_variables, ref_model.group(group.name))
  return norms[model.current(group)]


def producer_norms(model: Traced, variables: Any, group: Group) -> np.ndarray:
  """[C] L1 norm of every current channel's producer filters (summed over
  the group's producers): what `weight_sum` ranks (Li et al. 2017)."""
  alive = model.current(group)
  renumber = np.where(alive, np.cumsum(alive) - 1, -1)
  norms = np.zeros(int(alive.sum()))
  leaves = flat_leaves(variables)
  for m in group.members:
    if m.path not in group.producer_kernels:
      continue
    x = np.abs(np.asarray(leaves[m.path], np.float64))
    per_position = np.moveaxis(x, m.axis, 0).reshape(x.shape[m.axis], -1)
    index = renumber[m.index[model.mask(m.path, m.axis)]]
    hit = index >= 0
    np.add.at(norms, index[hit], per_position[hit].sum(axis=1))
  return norms


def selection_inputs(
  per_consumer: dict[str, GroupStats],
  norms: np.ndarray | None = None,
  key: jax.Array | None = None,
  unpruned_norms: np.ndarray | None = None,
) -> select.SelectionInputs:
  """What a criterion sees of a group: the combined problem's Gram and
  cross moments (plain and centred, float32), the first consumer's zero
  fractions, the producers' filter norms (as a [1, C] kernel), now and in
  the unpruned model."""
  first = next(iter(per_consumer.values()))
  f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
  plain = combine(per_consumer)
  has_target = first.cross is not None
  centred = (
    combine(per_consumer, centred=True) if first.sums is not None else None
  )
  return select.SelectionInputs(
    gram=f32(plain.gram),
    zero_fraction=first.zero_fraction,
    producer_kernel=None if norms is None else f32(norms)[None],
    key=key,
    centred_gram=None if centred is None else f32(centred.gram),
    cross=f32(plain.cross) if has_target else None,
    centred_cross=f32(centred.cross) if has_target and centred else None,
    original_producer_kernel=(
      None if unpruned_norms is None else f32(unpruned_norms)[None]
    ),
  )


def fit(
  per_consumer: dict[str, GroupStats], keep: np.ndarray, options: PruneOptions
) -> tuple[dict, dict | None, dict[str, dict[str, float]]]:
  """Each consumer's least-squares scales, mean shift (with `centred`) and
  relative errors (as pruned, unscaled, centred) for a kept set."""
  scales, shifts, errors = {}, {} if options.centred else None, {}
  for name, st in per_consumer.items():
    plain, centred = st.target(), st.target(centred=True)
    fit_on = centred if options.centred else plain
    if options.least_squares:
      w = np.asarray(
        reconstruct.ridge_scales(
          np.asarray(fit_on.gram, np.float32),
          keep,
          options.ridge,
          np.asarray(fit_on.cross, np.float32),
        )  # fmt: skip
      )
    else:
      w = np.ones(len(keep), np.float32)
    if not np.all(np.isfinite(w)):
      raise NonFiniteError(
        f"the least squares of consumer {name} gave non-finite scales (its "
        "kept channels' Gram matrix is singular?): set a small ridge, e.g. "
        "ridge=1e-6"
      )
    scales[name] = w

    def error(t, w=None):
      return float(reconstruct.relative_error(t.gram, keep, w, *t[1:]))

    error_centred = error(centred, w)
    if options.centred:
      shifts[name] = np.asarray(
        reconstruct.mean_shift(
          st.sums, st.output_counts, keep, w, st.target_sums
        )
      )
      as_pruned = error_centred * centred.norm / plain.norm
    else:
      as_pruned = error(plain, w)
    errors[name] = {
      "pruned": as_pruned, "unscaled": error(plain), "centred": error_centred,
    }  # fmt: skip
  return scales, shifts, errors


def _keep(
  model: Traced,
  variables: Any,
  group: Group,
  per_consumer: dict[str, GroupStats],
  n_keep: int,
  options: PruneOptions,
  key: jax.Array | None,
  reference: tuple[Traced, Any] | None,
) -> np.ndarray:
  """The checked step's kept set: the criterion's first `n_keep`."""
  options.check()
  check_group(model, group)
  check_variables(model, variables)
  n_keep = keep_number(model.width(group), None, n_keep)
  first = next(iter(per_consumer.values()))
  if options.target == "original" and first.cross is None:
    raise ValueError(
      'options.target="original" needs statistics collected with '
      "reference=(unpruned model, its variables)"
    )
  if options.criterion == "weight_sum_original" and reference is None:
    raise ValueError(
      'criterion "weight_sum_original" scores the unpruned model: pass '
      "reference=(unpruned model, its variables)"
    )
  key = jax.random.key(0) if key is None else key
  inputs = selection_inputs(
    per_consumer, producer_norms(model, variables, group), key,
    original_norms(model, group, reference),
  )  # fmt: skip
  order = select.removal_order(options.criterion, inputs)
  return np.asarray(select.keep_indices(order, n_keep))


def _record(group, options, width, keep, scales, errors, per_consumer,
            refitted=()) -> Record:  # fmt: skip
  first = next(iter(per_consumer.values()))
  mean = lambda k: float(np.mean([e[k] for e in errors.values()]))  # noqa: E731
  return Record(
    group=group.name,
    criterion=options.criterion,
    least_squares=options.least_squares,
    ridge=float(options.ridge),
    centred=options.centred,
    target=options.target,
    width_before=width,
    width_after=len(keep),
    kept=[int(i) for i in keep],
    scales={k: [float(s) for s in w] for k, w in scales.items()},
    errors={k: e["pruned"] for k, e in errors.items()},
    relative_error=mean("pruned"),
    relative_error_unscaled=mean("unscaled"),
    relative_error_centred=mean("centred"),
    samples=first.count,
    images=first.images,
    refit=options.refit,
    refitted=sorted(refitted),
  )


def prune_step(
  model: Traced,
  variables: Any,
  group: Group,
  per_consumer: dict[str, GroupStats],
  n_keep: int,
  options: PruneOptions = PruneOptions(),
  key: jax.Array | None = None,
  reference: tuple[Traced, Any] | None = None,
) -> tuple[Traced, Any, Record]:
  """Selects `n_keep` channels, fits the scales, rebuilds the model.

  Pure given its inputs: no data is read and nothing is written.

  Args:
    model, variables: the traced model (`depgraph.trace*`), possibly
      pruned already, and its current variables.
    group: one of `model.groups`.
    per_consumer: `depgraph.collect(model, variables, group, ...)` (with
      `reference=` for `options.target == "original"`).
    n_keep: channels kept, in [1, current width].
    options: criterion, least squares, ridge, centred (see PruneOptions);
      `refit="kernel"` reads data after surgery: use `prune_group`.
    key: PRNG key of key-driven criteria ("random").
    reference: (model, variables) of the unpruned model: what
      `weight_sum_original` scores.

  Returns:
    (pruned model, pruned variables, Record).
  """
  if options.refit != "scales":
    raise ValueError(
      f'refit="{options.refit}" fits the kernels on data after surgery: '
      "use depgraph.prune_group (or depgraph.prune, then "
      "depgraph.refit_kernels)"
    )
  width = model.width(group)
  keep = _keep(
    model, variables, group, per_consumer, n_keep, options, key, reference
  )
  scales, shifts, errors = fit(per_consumer, keep, options)
  pruned, new_variables = prune(model, variables, group, keep, scales, shifts)
  record = _record(group, options, width, keep, scales, errors, per_consumer)
  return pruned, new_variables, record


def _prune_refit(
  model, variables, group, per_consumer, n_keep, options, key, reference,
  batches, max_batches, progress,
):  # fmt: skip
  """`prune_step` with the refittable consumers' kernels refitted after
  surgery (`refit.refit_kernels`) in place of their scales and shifts."""
  width = model.width(group)
  keep = _keep(
    model, variables, group, per_consumer, n_keep, options, key, reference
  )
  scales, shifts, errors = fit(per_consumer, keep, options)
  refitted = {c.name for c in refit_lib.refitted(model, group)}
  rest = lambda d: {k: v for k, v in d.items() if k not in refitted}  # noqa: E731
  pruned, new_variables = prune(
    model, variables, group, keep, rest(scales),
    None if shifts is None else rest(shifts),
  )  # fmt: skip
  target = reference if options.target == "original" else (model, variables)
  new_variables, refit_errors = refit_lib.refit_kernels(
    pruned, new_variables, group, batches, target, centred=options.centred,
    ridge=options.ridge, max_batches=max_batches, progress=progress,
  )  # fmt: skip
  for name, e in refit_errors.items():
    errors[name] = {**errors[name], "pruned": e}
  record = _record(
    group, options, width, keep, rest(scales), errors, per_consumer, refitted
  )
  return pruned, new_variables, record


def prune_group(
  model: Traced,
  variables: Any,
  group: Group,
  batches: Iterable[Any],
  *,
  keep_ratio: float = 0.5,
  n_keep: int | None = None,
  options: PruneOptions | None = None,
  key: jax.Array | None = None,
  reference: tuple[Traced, Any] | None = None,
  max_batches: int | None = None,
  progress: bool = False,
  **option_fields: Any,
) -> tuple[Traced, Any, Record]:
  """`collect` then `prune_step`: one group to `n_keep` (or `keep_ratio`
  of its) channels.

  Args:
    model, variables, group: as `prune_step`.
    batches: the model's inputs (arrays, argument tuples or dicts with
      "image"); statistics are summed over them.
    keep_ratio, n_keep: how many channels stay (n_keep wins).
    options: a PruneOptions; or give its fields as keywords
      (`criterion="forward", mode="exhaustive"`). Default: the paper's
      greedy and least squares, exhaustive statistics.
    key: PRNG key: statistics sampling and the random criterion.
    reference: (model, variables) of the unpruned model, for
      `target="original"` and `weight_sum_original`.
    max_batches, progress: as `depgraph.collect`.
  """
  if options is None:
    options = PruneOptions(**{"mode": "exhaustive", **option_fields})
  elif option_fields:
    options = dataclasses.replace(options, **option_fields)
  options.check(has_reference=reference is not None)
  check_group(model, group)
  n_keep = keep_number(model.width(group), keep_ratio, n_keep)
  key = jax.random.key(0) if key is None else key
  stats_key, select_key = jax.random.split(key)
  per_consumer = collect(
    model, variables, group, batches, mode=options.mode, key=stats_key,
    samples_per_image=options.samples_per_image, max_batches=max_batches,
    progress=progress,
    reference=reference if options.target == "original" else None,
  )  # fmt: skip
  if options.refit == "kernel":
    return _prune_refit(
      model, variables, group, per_consumer, n_keep, options, select_key,
      reference, batches, max_batches, progress,
    )  # fmt: skip
  return prune_step(
    model, variables, group, per_consumer, n_keep, options, select_key,
    reference,
  )  # fmt: skip
