r"""Ratio sweeps: accuracy against FLOPs for every criterion, vmapped.

  python -m train.sweep --config configs/fmnist_vgg16_sweep.py \
      --workdir runs/sweep

Statistics of every group once (class-balanced training images through the
unpruned model), then one sweep per criterion: the keep ratios become masked
variants of the model, evaluated together by one vmapped forward
(`thinet_jax.sweep`). Writes <workdir>/sweep.json, sweep.md and sweep.png
(accuracy before fine-tuning against FLOPs, one line per criterion).
"""

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags

from thinet_jax import (
  allocate,
  depgraph,
  factories,
  groups,
  profile,
  report,
  select,
  sharding,
  stats,
  sweep,
  train,
  variants,
)
from thinet_jax.options import PruneOptions
from thinet_jax.spec import ModelSpec
from thinet_jax.stats import GroupStats
from train import common

common.define_flags()
flags.adopt_module_key_flags(common)


def main(argv):
  config, workdir, start = common.start(argv)
  common.require_checkpoint(config, "train.sweep")
  common.validate_training(config)
  model = common.checkpoint_spec(config)
  if common.spec_of(model) is None and config.finetune_steps > 0:
    raise app.UsageError(
      "config.finetune_steps (the vmapped fine-tune of every variant) is "
      f"for the presets only so far; a model factory ({config.model}) is "
      "swept before fine-tuning: set config.finetune_steps=0"
    )
  with common.locked(workdir):
    _sweep(config, workdir, start)


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
  spec, variables = run.spec, run.variables
  if common.spec_of(spec) is None:  # any model: on its traced computation
    result = compare_graph(config, run)
    _write(config, workdir, start, result)
    return
  names = list(config.groups) or [g.name for g in groups.paper_groups(spec)]
  batches = common.stats_batches(config)
  key = jax.random.key(config.seed)
  group_stats = stats.collect_groups(
    spec, variables, names, lambda: batches(config.seed), key=key,
    mode=config.stats_mode, samples_per_image=config.samples_per_image,
  )  # fmt: skip

  finetune = None
  if config.finetune_steps > 0:
    ft = config.copy_and_resolve_references()
    ft.learning_rate, ft.schedule = config.finetune_lr, "constant"
    ft.warmup_epochs = 0.0
    tx = train.optimizer(ft, run.steps_per_epoch)

    def finetune(stacked, masks):
      tuned, _ = variants.finetune_variants(
        spec, stacked, masks, run.train_data(config.seed + 1), tx,
        config.finetune_steps, seed=config.seed,
      )  # fmt: skip
      return tuned

  result = compare(
    spec, variables, group_stats, list(config.keep_ratios),
    list(config.criteria), run.eval_data, image_size=config.image_size,
    least_squares=config.least_squares, ridge=config.ridge,
    key=jax.random.fold_in(key, 1), allocated=config.allocated,
    finetune=finetune,
  )  # fmt: skip
  _write(config, workdir, start, result)


def compare(
  spec: ModelSpec,
  variables: dict[str, Any],
  group_stats: Mapping[str, GroupStats],
  ratios: Sequence[float],
  criteria: Sequence[str],
  eval_batches: Callable[[], Iterable[dict[str, np.ndarray]]],
  *,
  image_size: int,
  least_squares: bool = True,
  ridge: float = 0.0,
  key: jax.Array | None = None,
  allocated: bool = True,
  finetune: Callable[[dict, Any], dict] | None = None,
  progress: bool = True,
) -> dict[str, Any]:
  """Accuracy against FLOPs for every criterion at every keep ratio.

  One sweep per criterion: the K ratios, shared by all groups, become K
  masked variants evaluated in one vmapped pass (`variants.evaluate_sweep`): the
  paper's comparison of selection methods (section 4.1), before
  fine-tuning. With `allocated`, one
  more line: ThiNet's orders with per-group keep counts from `sweep.allocate`
  at each thinet variant's FLOPs.

  Args:
    spec, variables, group_stats: as `sweep.plan`.
    ratios: K keep ratios.
    criteria: names in `select.CRITERIA`.
    eval_batches: returns a fresh iterable of eval batches.
    image_size: for params and FLOPs.
    least_squares, ridge, key: as `sweep.plan`.
    allocated: add the allocated line ("thinet-allocated").
    finetune: optional (stacked, masks) -> fine-tuned stacked variables
      (e.g. `variants.finetune_variants` bound to data); then every variant is
      evaluated again.
    progress: print one line per sweep.

  Returns:
    {"ratios", "baseline": {accuracy, flops, params}, "lines": {label:
    [{ratio, counts, flops, params, flops_fraction, accuracy, loss,
    relative_error (mean over groups), accuracy_finetuned?}]}, "curves":
    {criterion: {group: e(1..C)}}}.
  """
  base = profile.count(spec, image_size)
  baseline = train.evaluate(spec, variables, eval_batches())
  names = list(group_stats)

  def run(label: str, sw: sweep.Sweep) -> list[dict[str, Any]]:
    results = variants.evaluate_sweep(spec, variables, sw, eval_batches())
    tuned = None
    if finetune is not None:
      stacked = sweep.stack_variants(spec, variables, sw)
      masks = sweep.param_masks(spec, variables, sw)
      tuned = variants.evaluate_variants(
        spec, finetune(stacked, masks), eval_batches()
      )
    rows = []
    for k, (cost, result) in enumerate(
      zip(sw.costs(spec, image_size), results, strict=True)
    ):
      errors = sweep.masked_errors_of(sw, group_stats, k)
      row = {
        "ratio": float(np.mean(sw.counts[k] / np.asarray(sw.widths))),
        "counts": {n: int(c) for n, c in zip(names, sw.counts[k], strict=True)},
        **cost,
        "flops_fraction": cost["flops"] / base["flops"],
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "relative_error": float(np.mean(list(errors.values()))),
      }
      if tuned is not None:
        row["accuracy_finetuned"] = tuned[k]["accuracy"]
      rows.append(row)
    if progress:
      accs = ", ".join(f"{r['accuracy']:.3f}" for r in rows)
      print(f"sweep {label}: accuracy {accs}")
    return rows

  lines, curves = {}, {}
  for criterion in criteria:
    sw = sweep.plan(
      spec, variables, group_stats, ratios, criterion=criterion,
      least_squares=least_squares, ridge=ridge, key=key,
    )  # fmt: skip
    lines[criterion] = run(criterion, sw)
    curves[criterion] = {
      n: sweep.error_curve(
        group_stats[n].gram, sw.orders[n], least_squares, ridge
      )
      for n in names
    }
  if allocated:
    model = sweep.cost_model(spec, names, image_size)
    uniform = sweep.plan(
      spec, variables, group_stats, ratios, criterion="thinet",
      least_squares=least_squares, ridge=ridge,
    )  # fmt: skip
    thinet_curves = {
      n: sweep.error_curve(
        group_stats[n].gram, uniform.orders[n], least_squares, ridge
      )
      for n in names
    }  # fmt: skip
    counts = []
    for cost in uniform.costs(spec, image_size):
      alloc = sweep.allocate(
        thinet_curves, model, cost["flops"] / base["flops"]
      )
      counts.append([alloc[n] for n in names])
    sw = sweep.plan(
      spec, variables, group_stats, counts=counts, criterion="thinet",
      least_squares=least_squares, ridge=ridge,
    )  # fmt: skip
    lines["thinet-allocated"] = run("thinet-allocated", sw)
  return {
    "ratios": list(ratios),
    "baseline": {
      "accuracy": baseline["accuracy"],
      "flops": base["flops"],
      "params": base["params"],
    },
    "lines": lines,
    "curves": {
      c: {n: v.tolist() for n, v in per.items()} for c, per in curves.items()
    },
  }


def compare_graph(config, run) -> dict[str, Any]:
  """`compare` for any model, on its traced computation: every group's
  statistics once (the unpruned model), then per criterion the K keep
  ratios as K joint variants (`depgraph.joint_sweep`, each group with the
  run's options: centred fit, target, least squares), evaluated in one
  vmapped pass; with `config.allocated`, ThiNet's order with per-group
  counts from `depgraph.allocation` at each uniform variant's FLOPs."""
  net, variables = run.spec, run.variables
  traced = net.traced
  names = list(config.groups) or [g.name for g in traced.groups]
  options = PruneOptions(
    least_squares=config.least_squares, ridge=config.ridge,
    mode=config.stats_mode, samples_per_image=config.samples_per_image,
    centred=config.get("centred", False),
    target=config.get("target", "current"),
  )  # fmt: skip
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
  uniform = [
    {n: select.keep_count(w, r) for n, w in widths.items()} for r in ratios
  ]
  select_key = jax.random.fold_in(key, 1)
  keys = {n: select_key for n in names}

  def run_line(label: str, options: PruneOptions, counts) -> list[dict]:
    sw = depgraph.joint_sweep(
      traced, variables, per_group, counts, options, keys
    )
    results = variants.evaluate_variants(net, sw.stacked, run.eval_data())
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
