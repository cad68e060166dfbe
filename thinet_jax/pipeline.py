"""One ThiNet step: statistics, selection, least squares, surgery, record.

`prune_group` composes the library's pieces for one group (paper section 3,
steps 1-3 of the framework): collect the Gram statistics of the group's
consumer on training images through the current model, rank the channels by
a named criterion, keep `int(C * keep_ratio)` of them, optionally rescale
them by least squares, and rebuild the model smaller.

The resumable layer-by-layer procedure (`plan`, `run_procedure`) is in
`thinet_jax.procedure`; this module re-exports it.

Example:

  >>> spec2, vars2, record = pipeline.prune_group(
  ...     spec, variables, "conv3_1", batches, keep_ratio=0.5,
  ...     image_size=32, key=jax.random.key(0))
  >>> record.relative_error, record.flops_after / record.flops_before
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import jax

from thinet_jax import groups, profile, select
from thinet_jax.options import TARGETS, PruneOptions
from thinet_jax.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class PruneRecord:
  """What one pruning step did (JSON-ready via `dataclasses.asdict`).

  relative_error: reconstruction error of the consumer's output as pruned
    (scales applied, and with `centred` the mean shift folded in), relative
    to the target's sum of squares, on the statistics' samples;
    relative_error_unscaled: the same with unit scales and no shift;
    relative_error_centred: the error left once every output channel's
    mean is corrected (what survives the consumer's BatchNorm with
    re-estimated statistics), relative to the target's centred sum of
    squares.
  bn_batches: the most batches the BatchNorm statistics were re-estimated
    on after surgery, as requested (fewer when the statistics batches ran
    out first; 0: not re-estimated).
  target: "current" (the consumer's output in the model being pruned, the
    paper's) or "original" (the unpruned model's; see `prune_group`).
  refit: "scales" or "kernel" (`prune_group`; with "kernel" the errors are
    the refitted kernel's and `scales` is empty).
  """

  group: str
  criterion: str
  least_squares: bool
  ridge: float
  centred: bool
  width_before: int
  width_after: int
  kept: list[int]
  scales: list[float]
  relative_error: float
  relative_error_unscaled: float
  relative_error_centred: float
  bn_batches: int
  target: str
  samples: int
  images: int
  params_before: int
  params_after: int
  flops_before: int
  flops_after: int
  refit: str = "scales"


def prune_group(
  spec: ModelSpec,
  variables: dict[str, Any],
  group_name: str,
  batches: Iterable[dict[str, Any]],
  *,
  keep_ratio: float,
  image_size: int,
  criterion: str = "thinet",
  least_squares: bool = True,
  ridge: float = 0.0,
  mode: str = "sampled",
  samples_per_image: int = 10,
  key: jax.Array | None = None,
  max_batches: int | None = None,
  progress: bool = True,
  n_keep: int | None = None,
  centred: bool = False,
  bn_batches: int = 0,
  target: str = "current",
  reference: tuple[ModelSpec, dict[str, Any]] | None = None,
  refit: str = "scales",
) -> tuple[ModelSpec, dict[str, Any], PruneRecord]:
  """Prunes one group by a named criterion; returns the smaller model.

  Args:
    spec, variables: the current model.
    group_name: the producer's path ("conv3_1", "res2a/branch2a").
    batches: training batches ({"image": [B, H, W, C]}) for the statistics.
    keep_ratio: fraction of channels kept, in (0, 1]; n = int(C * ratio),
      at least 1.
    image_size: input size, for the params/FLOPs record.
    criterion: a name in `select.CRITERIA`.
    least_squares: rescale the kept channels (paper eq. 6); else scales 1.
    ridge: ridge term of the least squares.
    mode, samples_per_image: statistics sampling (see `stats`).
    key: PRNG key for sampling and the random criterion.
    max_batches: statistics batches to use.
    progress: show a progress bar.
    n_keep: keep exactly this many channels instead (e.g. from
      `allocate`); `keep_ratio` is then ignored.
    centred: BatchNorm-aware reconstruction: fit the scales on the centred
      statistics (`stats.centred_gram`) and fold the lost mean of every
      output channel into the consumer's bias or BatchNorm mean
      (`reconstruct.mean_shift`).
    bn_batches: after surgery, re-estimate every BatchNorm's statistics
      on up to this many of `batches` (`batchnorm.reestimate_batch_norm`);
      `batches` must then be re-iterable (a list or a dataset).
    target: what the kept channels reconstruct: "current", the consumer's
      output in this model (the paper's), or "original", the consumer's
      output in `reference` (the unpruned model) on the same images, so
      that each group also undoes the error the groups pruned before it
      left in its input (least squares and the forward criteria; the
      paper's greedy still ranks by the current output).
    reference: (spec, variables) of the unpruned model, for "original".
    refit: "scales" (the paper's per-channel scales) or "kernel" (the
      consumer's whole kernel refitted by least squares after surgery, He
      et al. 2017: `depgraph.refit_kernels`; `scales` is then empty).

  Returns:
    (new spec, new variables, PruneRecord).
  """
  if criterion not in select.CRITERIA:
    raise KeyError(
      f"unknown criterion {criterion!r}; known: {', '.join(select.CRITERIA)}"
    )
  if target not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
  if target == "original" and reference is None:
    raise ValueError(
      'target="original" needs reference=(spec, variables) of the unpruned '
      "model"
    )
  group = groups.get(spec, group_name)
  if n_keep is None:
    n_keep = select.keep_count(group.width, keep_ratio)
  elif not 1 <= n_keep <= group.width:
    raise ValueError(
      f"n_keep must be in [1, {group.width}] for {group_name}, got {n_keep}"
    )
  if bn_batches < 0:
    raise ValueError(f"bn_batches must be >= 0, got {bn_batches}")
  if bn_batches and iter(batches) is batches:
    raise ValueError(
      "bn_batches > 0 reads the batches a second time: pass a list or a "
      "dataset, not an iterator"
    )
  # The graph step on the preset's traced computation (the same code path
  # as any model's); the spec follows the hand-written group's width.
  from thinet_jax import depgraph, factories

  traced = factories.graph_of(spec, image_size)
  ref = None
  if reference is not None:  # target="original", weight_sum_original
    ref = (factories.graph_of(reference[0], image_size), reference[1])
  options = PruneOptions(
    criterion=criterion, least_squares=least_squares, ridge=ridge, mode=mode,
    samples_per_image=samples_per_image, centred=centred, target=target,
    refit=refit,
  )  # fmt: skip
  _, new_variables, rec = depgraph.prune_group(
    traced, variables, traced.group(group.name), batches, n_keep=n_keep,
    options=options, key=key, reference=ref, max_batches=max_batches,
    progress=progress,
  )  # fmt: skip
  new_spec = groups.with_width(spec, group, n_keep)
  if bn_batches:
    from thinet_jax import batchnorm

    new_variables = batchnorm.reestimate_batch_norm(
      new_spec, new_variables, batches, bn_batches, progress=progress
    )
  scales = next(iter(rec.scales.values()), [])
  before = profile.count(spec, image_size)
  after = profile.count(new_spec, image_size)
  record = PruneRecord(
    group=group.name,
    criterion=criterion,
    least_squares=least_squares,
    ridge=float(ridge),
    centred=centred,
    width_before=group.width,
    width_after=n_keep,
    kept=rec.kept,
    scales=scales,
    relative_error=rec.relative_error,
    relative_error_unscaled=rec.relative_error_unscaled,
    relative_error_centred=rec.relative_error_centred,
    bn_batches=bn_batches if "batch_stats" in new_variables else 0,
    target=target,
    samples=rec.samples,
    images=rec.images,
    params_before=before["params"],
    params_after=after["params"],
    flops_before=before["flops"],
    flops_after=after["flops"],
    refit=refit,
  )
  return new_spec, new_variables, record


_PROCEDURE = (
  "GroupPlan", "plan", "prune_planned", "run_procedure", "stage_ends",
  "step_determinants", "step_dir",
)  # fmt: skip


def __getattr__(name: str) -> Any:
  """The procedure's names, from `thinet_jax.procedure` (which imports
  this module, so they are looked up on first use)."""
  if name in _PROCEDURE:
    from thinet_jax import procedure

    return getattr(procedure, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
