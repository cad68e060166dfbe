r"""Ratio sweeps: accuracy against FLOPs for every criterion, vmapped.

  python -m train.sweep --config configs/fmnist_vgg16_sweep.py \
      --workdir runs/sweep

Statistics of every group once (class-balanced training images through the
unpruned model), then one sweep per criterion: the keep ratios become masked
variants of the model, evaluated together by one vmapped forward on the
traced computation (`depgraph.joint_sweep`), for a preset or any model
given by its factory. Writes <workdir>/sweep.json, sweep.md and sweep.png
(accuracy before fine-tuning against FLOPs, one line per criterion).
"""

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from absl import flags

from thinet_jax import (
  allocate,
  depgraph,
  factories,
  nets,
  report,
  sharding,
  train,
  variants,
)
from thinet_jax.options import PruneOptions
from train import common

common.define_flags()
flags.adopt_module_key_flags(common.cli)


def main(argv):
  config, workdir, start = common.start(argv)
  common.require_checkpoint(config, "train.sweep")
  validate(config)
  with common.locked(workdir):
    _sweep(config, workdir, start)


def validate(config) -> None:
  """Every field of a train.sweep config, checked before any data is read
  or anything compiled: a bad value fails in a second, naming the field."""
  from absl import app

  from thinet_jax import select

  common.validate_training(config)
  ratios = config.keep_ratios
  if not isinstance(ratios, list | tuple) or not ratios:
    raise app.UsageError(
      "config.keep_ratios must list at least one keep ratio in (0, 1], "
      f"e.g. '--config.keep_ratios=(0.5,0.75)'; got {ratios!r}"
    )
  for r in ratios:
    try:
      select.keep_count(1, r)
    except ValueError as e:
      raise app.UsageError(f"config.keep_ratios: {e}") from None
  if not config.criteria:
    raise app.UsageError("config.criteria must name at least one criterion")
  for c in config.criteria:
    if c not in select.CRITERIA:
      raise app.UsageError(
        f"config.criteria: {c!r} is not a criterion; known: "
        f"{', '.join(select.CRITERIA)}"
      )
  steps = config.finetune_steps
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
    raise app.UsageError(
      f"config.finetune_steps must be an integer >= 0, got {steps!r}"
    )
  for field in ("images_per_class", "samples_per_image"):
    if config[field] < 1:
      raise app.UsageError(f"config.{field} must be >= 1, got {config[field]}")
  try:
    sweep_options(config).check(has_reference=True)
  except (ValueError, KeyError) as e:
    raise app.UsageError(f"config: {common.one_line(e)}") from None
  model = common.checkpoint_spec(config)
  known = [g.name for g in factories.graph_of(model, config.image_size).groups]
  unknown = [g for g in config.groups if g not in known]
  if unknown:
    raise app.UsageError(
      f"config.groups: no prunable group {unknown[0]!r}; the model's groups: "
      f"{', '.join(known)}"
    )


def sweep_options(config) -> PruneOptions:
  """The method's options a sweep config sets (the criterion per line)."""
  return PruneOptions(
    least_squares=config.least_squares, ridge=config.ridge,
    mode=config.stats_mode, samples_per_image=config.samples_per_image,
    centred=config.get("centred", False),
    target=config.get("target", "current"),
  )  # fmt: skip


def _write(config, workdir, start, result):
  result["config"] = config.to_dict()
  result["wall_s"] = time.time() - start
  result["devices"] = [str(d) for d in jax.devices()]
  if sharding.is_main_process():
    report.write_sweep(workdir, result)
  print(report.sweep_table(result))
  print(f"sweep: {workdir}/sweep.json, sweep.md, sweep.png")


def _sweep(config, workdir, start):
  run = common.setup(config)
  result = compare(config, run)
  _write(config, workdir, start, result)


def compare(config, run) -> dict[str, Any]:
  """Accuracy against FLOPs for every criterion at every keep ratio, on
  any model's traced computation (a preset's or a factory's).

  Every group's statistics once (the unpruned model), then per criterion
  the K keep ratios, shared by all groups, as K joint variants
  (`depgraph.joint_sweep`, each group with the run's options: centred
  fit, target, least squares) evaluated in one vmapped pass on the
  original kernels (`variants.evaluate_shared`): the paper's comparison
  of selection methods (section 4.1), before fine-tuning. With
  `config.finetune_steps`, every variant is also fine-tuned (all K in one
  vmapped step, pruned entries kept at zero) and evaluated again. With
  `config.allocated`, one more line: ThiNet's order with per-group counts
  from the error curves (`allocate`) at each uniform variant's FLOPs.

  Returns:
    {"ratios", "baseline": {accuracy, flops, params}, "lines": {label:
    [{ratio, counts, flops, params, flops_fraction, accuracy, loss,
    relative_error (mean over groups), accuracy_finetuned?}]}, "curves":
    {criterion: {group: e(1..C)}}}.
  """
  net, variables = nets.of(run.spec), run.variables
  traced = factories.graph_of(net, config.image_size)
  names = common.group_names(config, net)
  options = sweep_options(config)
  batches = common.stats_batches(config)
  key = jax.random.key(config.seed)
  reference = (traced, variables) if options.target == "original" else None
  per_group = {
    n: depgraph.collect(
      traced, variables, traced.group(n), batches(config.seed),
      mode=options.mode, key=jax.random.fold_in(key, i),
      samples_per_image=options.samples_per_image, reference=reference,
      progress=True,
    )
    for i, n in enumerate(names)
  }  # fmt: skip
  example = factories.example(net, config.image_size)
  base = depgraph.count(traced, example)
  baseline = train.evaluate(net, variables, run.eval_data())
  widths = {n: traced.width(traced.group(n)) for n in names}
  ratios = list(config.keep_ratios)
  uniform = depgraph.uniform_counts(traced, names, ratios)
  select_key = jax.random.fold_in(key, 1)
  keys = {n: select_key for n in names}

  def finetune(sw) -> list[dict[str, float]]:
    ft = config.copy_and_resolve_references()
    ft.learning_rate, ft.schedule = config.finetune_lr, "constant"
    ft.warmup_epochs = 0.0
    tuned, _ = variants.finetune_variants(
      net, depgraph.stack(traced, variables, sw),
      depgraph.param_masks(traced, variables, sw),
      run.train_data(config.seed + 1),
      train.optimizer(ft, run.steps_per_epoch), config.finetune_steps,
      seed=config.seed,
    )  # fmt: skip
    return variants.evaluate_variants(net, tuned, run.eval_data())

  def run_line(label: str, options: PruneOptions, counts) -> list[dict]:
    sw = depgraph.joint_sweep(
      traced, variables, per_group, counts, options, keys
    )
    results = variants.evaluate_shared(
      net, traced, variables, sw, run.eval_data()
    )
    tuned = finetune(sw) if config.finetune_steps > 0 else None
    rows = []
    for k, result in enumerate(results):
      cost = depgraph.count(sw.shapes[k], example)
      rows.append({
        "ratio": float(np.mean([sw.counts[k][n] / widths[n] for n in names])),
        "counts": {n: int(c) for n, c in sw.counts[k].items()},
        **cost,
        "flops_fraction": cost["flops"] / base["flops"],
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "relative_error": float(np.mean(list(sw.errors[k].values()))),
      })  # fmt: skip
      if tuned is not None:
        rows[-1]["accuracy_finetuned"] = tuned[k]["accuracy"]
    print(f"sweep {label}: accuracy "
          + ", ".join(f"{r['accuracy']:.3f}" for r in rows))  # fmt: skip
    return rows

  lines, curves = {}, {}
  for criterion in config.criteria:
    crit = dataclasses.replace(options, criterion=criterion)
    lines[criterion] = run_line(criterion, crit, uniform)
    curves[criterion] = {
      n: depgraph.error_curve(
        traced, variables, traced.group(n), per_group[n], crit, select_key
      ).tolist()
      for n in names
    }  # fmt: skip
  if config.allocated:
    thinet = dataclasses.replace(options, criterion="thinet")
    thinet_curves = curves.get("thinet") or {
      n: depgraph.error_curve(
        traced, variables, traced.group(n), per_group[n], thinet, select_key
      )
      for n in names
    }  # fmt: skip
    costs = depgraph.cost_model(traced, names, example, metric="flops")
    counts = [
      allocate.allocate(thinet_curves, costs, row["flops_fraction"])
      for row in lines.get("thinet") or run_line("thinet", thinet, uniform)
    ]
    lines["thinet-allocated"] = run_line("thinet-allocated", thinet, counts)
  return {
    "ratios": ratios,
    "baseline": {
      "accuracy": baseline["accuracy"],
      "flops": base["flops"],
      "params": base["params"],
    },  # fmt: skip
    "lines": lines,
    "curves": curves,
  }


if __name__ == "__main__":
  common.run(main)
