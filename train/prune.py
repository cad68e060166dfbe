"""The ThiNet procedure on a trained model: prune, fine-tune, report.

  python -m train.prune --config configs/fmnist_vgg16_thinet.py \
      --workdir runs/prune

Group by group (paper section 3.3): statistics on class-balanced training
images through the current model, selection by the configured criterion,
least squares, surgery, a short fine-tune; then a final fine-tune. Every
step is checkpointed under <workdir>: the same command started again after
an interruption continues where it stopped and ends with the same result.
Writes <workdir>/report.json, report.md, accuracy.png, widths.png and the
pruned model to <workdir>/model.
"""

import json
import os
import time

import jax
from absl import app

from thinet_jax import (
  groups,
  pipeline,
  profile,
  report,
  sharding,
  stats,
  surgery,
  sweep,
  train,
)
from train import common

common.define_flags()


def main(argv):
  config, workdir, start = common.start(argv)
  common.require_checkpoint(config, "train.prune")
  run = common.setup(config)
  base_spec, base_vars = run.spec, run.variables
  evaluate = lambda spec, variables: train.evaluate(  # noqa: E731
    spec, variables, run.eval_data()
  )
  baseline = evaluate(base_spec, base_vars)
  print(f"baseline {config.model}: accuracy {baseline['accuracy']:.4f}")

  batches = common.stats_batches(config)
  teacher = None
  if config.distill_weight > 0:  # Distil from the unpruned model.
    teacher = train.Teacher(
      base_spec, base_vars, config.distill_temperature, config.distill_weight
    )

  def finetune(spec, variables, step_dir, epochs, lr, desc, step):
    ft = config.copy_and_resolve_references()
    ft.num_epochs, ft.learning_rate = epochs, lr
    ft.schedule, ft.warmup_epochs = "constant", 0.0
    # Fresh batches for every step (seed + 1 + step); the procedure
    # evaluates after each step itself.
    variables, _ = common.fit(
      run, variables, step_dir, desc, spec, ft, config.seed + 1 + step,
      eval_data=False, teacher=teacher,
    )  # fmt: skip
    return variables

  start_spec, start_vars, head = base_spec, base_vars, None
  if config.head:  # ThiNet-GAP / Tiny: the new head first, then the groups.
    start_spec, start_vars, head = _replace_head(
      config, workdir, base_spec, base_vars, batches, finetune, evaluate
    )
  names = list(config.groups) or [
    g.name for g in groups.paper_groups(start_spec)
  ]
  allocation = None
  if config.budget > 0:
    allocation = _allocate(
      config, workdir, start_spec, start_vars, names, batches
    )
  plans = pipeline.plan(
    start_spec, names,
    list(config.keep_ratio)
    if isinstance(config.keep_ratio, tuple | list)
    else config.keep_ratio,
    config.finetune_epochs, config.finetune_lr, config.stage_end_epochs,
    keep_counts=allocation and allocation["counts"],
  )  # fmt: skip
  spec, variables, records = pipeline.run_procedure(
    start_spec, start_vars, plans,
    stats_batches=lambda i: batches(config.seed + i),
    finetune=finetune, evaluate=evaluate, workdir=workdir,
    image_size=config.image_size, seed=config.seed,
    options=pipeline.PruneOptions(
      config.criterion, config.least_squares, config.ridge,
      config.stats_mode, config.samples_per_image, config.centred,
      config.bn_batches, config.target,
    ),
  )  # fmt: skip
  before_final = evaluate(spec, variables)
  variables, history = common.fit(
    run,
    variables,
    os.path.join(workdir, "final"),
    "final fine-tune",
    spec,
    data_seed=config.seed + 1 + len(plans),
    teacher=teacher,
  )
  final = history[-1] if history else evaluate(spec, variables)
  train.save_model(
    os.path.join(workdir, "model"), spec, variables, config.image_size
  )
  result = report.procedure_report(
    base_spec, spec, config.image_size, baseline, records, before_final,
    final, config.to_dict(), time.time() - start, jax.devices(),
  )  # fmt: skip
  result["final_history"] = history  # One eval per final fine-tune epoch.
  if allocation is not None:
    result["allocation"] = allocation
  if head is not None:
    result["head"] = head
  if sharding.is_main_process():
    report.write(workdir, result)
  print(report.markdown_table(result))
  base = profile.count(base_spec, config.image_size)["flops"]
  now = profile.count(spec, config.image_size)["flops"]
  print(
    f"{config.criterion}: accuracy {baseline['accuracy']:.4f} -> "
    f"{final['accuracy']:.4f}, FLOPs {base / now:.2f}x fewer; "
    f"report: {workdir}/report.md, model: {workdir}/model"
  )


def _replace_head(config, workdir, spec, variables, batches, finetune,
                  evaluate):  # fmt: skip
  """`config.head` "gap": the fc head replaced by global average pooling
  and a least-squares classifier (`surgery.gap_head`), then fine-tuned for
  `head_finetune_epochs`. Stored under <workdir>/head, so a resumed run
  reuses it. Returns (spec, variables, what it measured)."""
  if config.head != "gap":
    raise app.UsageError(
      f'config.head must be "" (keep the head) or "gap", got {config.head!r}'
    )
  head_dir = os.path.join(workdir, "head")
  done = os.path.join(head_dir, "head.json")
  if os.path.exists(done):
    spec, variables, _ = train.load_model(os.path.join(head_dir, "model"))
    with open(done) as f:
      return spec, variables, json.load(f)
  spec, variables, info = surgery.gap_head(
    spec, variables, batches(config.seed)
  )
  info["head"] = config.head
  count = profile.count(spec, config.image_size)
  info |= {k: count[k] for k in ("params", "flops")}
  info["accuracy_least_squares"] = evaluate(spec, variables)["accuracy"]
  print(
    f"gap head: logits fit to {info['relative_error']:.4f} relative error "
    f"on {info['images']} images; accuracy {info['accuracy_least_squares']:.4f}"
  )
  # Data seed config.seed: the group steps use seed + 1 + step.
  variables = finetune(
    spec, variables, os.path.join(head_dir, "finetune"),
    config.head_finetune_epochs, config.finetune_lr, "fine-tune gap head", -1,
  )  # fmt: skip
  info["accuracy"] = evaluate(spec, variables)["accuracy"]
  print(f"gap head: accuracy {info['accuracy']:.4f} after its fine-tune")
  train.save_model(
    os.path.join(head_dir, "model"), spec, variables, config.image_size
  )
  common.write_json(done, info)
  return spec, variables, info


def _allocate(config, workdir, spec, variables, names, batches) -> dict:
  """Keep counts for `config.budget` (`sweep.allocation` on statistics of
  the unpruned model); stored in the workdir, so a resumed run reuses it."""
  path = os.path.join(workdir, "allocation.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  group_stats = stats.collect_groups(
    spec, variables, names, lambda: batches(config.seed),
    key=jax.random.key(config.seed), mode=config.stats_mode,
    samples_per_image=config.samples_per_image,
  )  # fmt: skip
  counts, _ = sweep.allocation(
    spec, variables, group_stats, config.budget,
    image_size=config.image_size, metric=config.budget_metric,
    criterion=config.criterion, least_squares=config.least_squares,
    ridge=config.ridge, key=jax.random.key(config.seed),
  )  # fmt: skip
  result = {
    "target": config.budget, "metric": config.budget_metric,
    "counts": counts,
  }  # fmt: skip
  common.write_json(path, result)
  print(f"allocation for {config.budget_metric} x{config.budget}: {counts}")
  return result


if __name__ == "__main__":
  app.run(main)
