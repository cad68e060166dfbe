"""The layer-by-layer procedure (paper section 3.3): prune a group,
fine-tune briefly, go on; resumable.

`plan` states the schedule (which groups, keep ratios or exact counts,
fine-tune epochs and learning rates); `run_procedure` runs it, writing every
step's pruned and fine-tuned model under the workdir, so an interrupted run
resumes where it stopped and a finished step is never redone. Each step is
`pipeline.prune_group` on a preset or `depgraph.prune_group` on any model's
traced computation.

  >>> plans = procedure.plan(spec, keep_ratio=0.5, finetune_epochs=1.0)
  >>> spec2, variables2, records = procedure.run_procedure(
  ...     spec, variables, plans, workdir, stats_batches, finetune, evaluate)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax

from thinet_jax import groups, select
from thinet_jax.options import PruneOptions
from thinet_jax.pipeline import prune_group
from thinet_jax.spec import ModelSpec


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
    accuracy = None  # No fine-tune: no fine-tuned accuracy to report.
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
