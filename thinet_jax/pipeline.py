"""One ThiNet step: statistics, selection, least squares, surgery, record.

`prune_group` composes the library's pieces for one group (paper section 3,
steps 1-3 of the framework): collect the Gram statistics of the group's
consumer on training images through the current model, rank the channels by
a named criterion, keep `int(C * keep_ratio)` of them, optionally rescale
them by least squares, and rebuild the model smaller.

Example:

  >>> spec2, vars2, record = pipeline.prune_group(
  ...     spec, variables, "conv3_1", batches, keep_ratio=0.5,
  ...     image_size=32, key=jax.random.key(0))
  >>> record.relative_error, record.flops_after / record.flops_before
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
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
  if target == "original":
    ref = (factories.graph_of(reference[0], image_size), reference[1])
  options = PruneOptions(
    criterion=criterion, least_squares=least_squares, ridge=ridge, mode=mode,
    samples_per_image=samples_per_image, centred=centred, target=target,
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
  (scales,) = rec.scales.values()
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
  )
  return new_spec, new_variables, record


# --- the layer-by-layer procedure (paper section 3.3) -----------------------


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """How one group is pruned and then fine-tuned."""

  name: str
  keep_ratio: float
  finetune_epochs: float
  finetune_lr: float
  n_keep: int | None = None  # Exact keep count (allocation); else the ratio.


def plan(
  spec: ModelSpec | Any,
  names: list[str] | None = None,
  keep_ratio: float | list[float] = 0.5,
  finetune_epochs: float = 1.0,
  finetune_lr: float = 1e-3,
  stage_end_epochs: float | None = None,
  keep_counts: dict[str, int] | None = None,
) -> list[GroupPlan]:
  """The paper's schedule: prune each group, fine-tune briefly, go on.

  Args:
    spec: the model to prune.
    names: groups in order; default `groups.paper_groups(spec)`.
    keep_ratio: one ratio, or one per group.
    finetune_epochs, finetune_lr: fine-tuning after each group (paper,
      VGG-16: about one epoch at 1e-3).
    stage_end_epochs: fine-tuning after the last group of a stage (the
      group before a pool, or the 2b of a stage's last block; paper: 2
      epochs); default `finetune_epochs`.
    keep_counts: name -> exact keep count (`allocate`), overriding
      `keep_ratio` for the groups it names.
  """
  traced = getattr(spec, "traced", None)  # a nets.Net of any model
  if traced is not None:
    all_groups = {g.name: g for g in traced.groups}
    names = names or list(all_groups)
  else:
    all_groups = {g.name: g for g in groups.groups(spec)}
    names = names or [g.name for g in groups.paper_groups(spec)]
  unknown = [n for n in names if n not in all_groups]
  if unknown:
    raise KeyError(
      f"unknown groups {unknown}; this spec's groups: {', '.join(all_groups)}"
    )
  ratios = (
    list(keep_ratio)
    if isinstance(keep_ratio, list | tuple)
    else [keep_ratio] * len(names)
  )
  if len(ratios) != len(names):
    raise ValueError(
      f"{len(ratios)} keep ratios for {len(names)} groups; give one ratio or "
      "one per group"
    )
  for r in ratios:
    select.keep_count(1, r)  # validates the range
  ends = stage_ends(spec)
  stage_end_epochs = (
    finetune_epochs if stage_end_epochs is None else stage_end_epochs
  )
  keep_counts = keep_counts or {}
  stray = sorted(set(keep_counts) - set(names))
  if stray:
    raise KeyError(f"keep_counts names groups {stray} that are not planned")
  plans = []
  for n, r in zip(names, ratios, strict=True):
    count = keep_counts.get(n)
    if count is not None:
      width = (
        traced.width(all_groups[n]) if traced is not None
        else all_groups[n].width
      )  # fmt: skip
      if not 1 <= count <= width:
        raise ValueError(f"keep count {count} for {n} is outside [1, {width}]")
      r = count / width
    epochs = stage_end_epochs if n in ends else finetune_epochs
    plans.append(GroupPlan(n, float(r), epochs, finetune_lr, count))
  return plans


def stage_ends(model: Any) -> set[str]:
  """Names of the groups that end a stage: the preset's own
  (`ModelSpec.stage_ends`); none for any other model."""
  return model.stage_ends() if isinstance(model, ModelSpec) else set()


def prune_planned(
  model: Any,
  variables: dict[str, Any],
  p: GroupPlan,
  batches: Iterable[dict[str, Any]],
  *,
  options: PruneOptions,
  key: jax.Array,
  reference: tuple[Any, dict[str, Any]],
  image_size: int,
  progress: bool = True,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """One planned group on a preset (`prune_group`) or on any model's
  `nets.Net` (`depgraph.prune_group` on its traced computation, then
  BatchNorm re-estimation); returns (model, variables, record dict) with
  the same fields either way."""
  if isinstance(model, ModelSpec):
    model, variables, rec = prune_group(
      model, variables, p.name, batches, keep_ratio=p.keep_ratio,
      image_size=image_size, key=key, progress=progress, n_keep=p.n_keep,
      reference=reference, **dataclasses.asdict(options),
    )  # fmt: skip
    return model, variables, dataclasses.asdict(rec)
  from thinet_jax import batchnorm, depgraph, factories

  traced = model.traced
  group = traced.group(p.name)
  before = factories.count(model, image_size)
  new_traced, variables, rec = depgraph.prune_group(
    traced, variables, group, batches, keep_ratio=p.keep_ratio,
    n_keep=p.n_keep, options=options, key=key,
    reference=(reference[0].traced, reference[1]), progress=progress,
  )  # fmt: skip
  model = factories.pruned(model, new_traced)
  bn = options.bn_batches if "batch_stats" in variables else 0
  if bn:
    variables = batchnorm.reestimate_batch_norm(
      model, variables, batches, bn, progress=progress
    )
  after = factories.count(model, image_size)
  record = {
    **dataclasses.asdict(rec),
    "bn_batches": bn,
    "params_before": before["params"],
    "params_after": after["params"],
    "flops_before": before["flops"],
    "flops_after": after["flops"],
  }
  return model, variables, record


def step_dir(workdir: str, index: int, p: GroupPlan) -> str:
  """<workdir>/steps/NN_<group>: where step `index` of a procedure lives."""
  return os.path.join(
    workdir, "steps", f"{index:02d}_{p.name.replace('/', '-')}"
  )


def step_determinants(
  context: dict[str, Any],
  plans: list[GroupPlan],
  index: int,
  options: PruneOptions,
  seed: int,
) -> dict[str, Any]:
  """Everything that determines step `index`'s result: the caller's
  context (starting model, data, fine-tune settings), the method, the seed
  and the plans up to and including this one (a later group's ratio does
  not change an earlier step)."""
  return {
    **context,
    "method": dataclasses.asdict(options),
    "seed": seed,
    "plans": [dataclasses.asdict(q) for q in plans[: index + 1]],
  }


def run_procedure(
  spec: ModelSpec,
  variables: dict[str, Any],
  plans: list[GroupPlan],
  *,
  stats_batches: Callable[[int], Iterable[dict[str, Any]]],
  finetune: Callable[..., dict[str, Any]],
  evaluate: Callable[[ModelSpec, dict[str, Any]], dict[str, float]],
  workdir: str,
  image_size: int,
  options: PruneOptions = PruneOptions(),
  seed: int = 0,
  progress: bool = True,
  context: dict[str, Any] | None = None,
  on_step: Callable[[int, dict[str, Any], bool], None] | None = None,
) -> tuple[ModelSpec, dict[str, Any], list[dict[str, Any]]]:
  """Prunes `plans` in order, fine-tuning after each; resumable.

  Each group's pruned model and fine-tuned model are saved under
  `step_dir(workdir, i, plan)`/{pruned,finetuned}; a run started again
  skips finished steps, resumes an interrupted fine-tune from its own
  checkpoint, and recomputes an interrupted pruning (deterministic given
  `seed`), so it ends with the same variables as an uninterrupted run.
  A step records what determined it (`step_determinants`) when it starts;
  resuming it under anything else raises `rundir.ResumeMismatchError`
  naming the differing fields, instead of mixing two runs in one model.

  Args:
    spec, variables: the model to prune.
    plans: from `plan`.
    stats_batches: i -> batches of statistics images for step i.
    finetune: (spec, variables, workdir, epochs, lr, desc, step) ->
      variables; `step` is the index into `plans`, so each fine-tune can
      draw its own batches.
    evaluate: (spec, variables) -> {"accuracy", ...}.
    workdir: where the steps live.
    image_size: input size.
    options: criterion, least squares, sampling (see `prune_group`).
    seed: seeds sampling and the random criterion.
    progress: progress bars.
    context: what else determines every step (the starting model's hash,
      data and fine-tune settings), recorded in its fingerprint.
    on_step: called as on_step(i, record, resumed) when step i is done.

  Returns:
    (final spec, final variables, one record dict per step).
  """
  from thinet_jax import checkpoints, rundir  # Orbax, Optax only here.

  os.makedirs(workdir, exist_ok=True)
  records = []
  original = (spec, variables)  # The reference for target="original".
  for i, p in enumerate(plans):
    directory = step_dir(workdir, i, p)
    rundir.claim_step(
      os.path.join(directory, rundir.FINGERPRINT),
      step_determinants(context or {}, plans, i, options, seed),
    )
    done_dir = os.path.join(directory, "finetuned")
    if checkpoints.has_checkpoint(done_dir):
      spec, variables, meta = checkpoints.load_model(done_dir)
      records.append(meta["extra"])
      if on_step is not None:
        on_step(i, meta["extra"], True)
      continue
    pruned_dir = os.path.join(directory, "pruned")
    if checkpoints.has_checkpoint(pruned_dir):
      spec, variables, meta = checkpoints.load_model(pruned_dir)
      record = meta["extra"]
    else:
      spec, variables, record = prune_planned(
        spec, variables, p, stats_batches(i), options=options,
        key=jax.random.fold_in(jax.random.key(seed), i), reference=original,
        image_size=image_size, progress=progress,
      )  # fmt: skip
      record["accuracy_pruned"] = evaluate(spec, variables)["accuracy"]
      checkpoints.save_model(pruned_dir, spec, variables, image_size, record)
    accuracy = record["accuracy_pruned"]  # No fine-tune: nothing changed.
    if p.finetune_epochs > 0:
      variables = finetune(
        spec, variables, os.path.join(directory, "finetune"),
        p.finetune_epochs, p.finetune_lr, f"fine-tune {p.name}", i,
      )  # fmt: skip
      accuracy = evaluate(spec, variables)["accuracy"]
    record = {
      **record,
      "finetune_epochs": p.finetune_epochs,
      "accuracy_finetuned": accuracy,
    }
    checkpoints.save_model(done_dir, spec, variables, image_size, record)
    records.append(record)
    if on_step is not None:
      on_step(i, record, False)
  return spec, variables, records
