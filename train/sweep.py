r"""Ratio sweeps: accuracy against FLOPs for every criterion, vmapped.

  python -m train.sweep --config configs/fmnist_vgg16_sweep.py \
      --workdir runs/sweep

Statistics of every group once (class-balanced training images through the
unpruned model), then one sweep per criterion: the keep ratios become masked
variants of the model, evaluated together by one vmapped forward
(`thinet_jax.sweep`). Writes <workdir>/sweep.json, sweep.md and sweep.png
(accuracy before fine-tuning against FLOPs, one line per criterion).
"""

import time

import jax
from absl import flags

from thinet_jax import groups, report, sharding, stats, sweep, train
from train import common

common.define_flags()
flags.adopt_module_key_flags(common)


def main(argv):
  config, workdir, start = common.start(argv)
  common.require_checkpoint(config, "train.sweep")
  common.validate_training(config)
  common.checkpoint_spec(config)
  with common.locked(workdir):
    _sweep(config, workdir, start)


def _sweep(config, workdir, start):
  run = common.setup(config)
  spec, variables = run.spec, run.variables
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
      tuned, _ = sweep.finetune_variants(
        spec, stacked, masks, run.train_data(config.seed + 1), tx,
        config.finetune_steps, seed=config.seed,
      )  # fmt: skip
      return tuned

  result = sweep.compare(
    spec, variables, group_stats, list(config.keep_ratios),
    list(config.criteria), run.eval_data, image_size=config.image_size,
    least_squares=config.least_squares, ridge=config.ridge,
    key=jax.random.fold_in(key, 1), allocated=config.allocated,
    finetune=finetune,
  )  # fmt: skip
  result["config"] = config.to_dict()
  result["wall_s"] = time.time() - start
  result["devices"] = [str(d) for d in jax.devices()]
  if sharding.is_main_process():
    report.write_sweep(workdir, result)
  print(report.sweep_table(result))
  print(f"sweep: {workdir}/sweep.json, sweep.md, sweep.png")


if __name__ == "__main__":
  common.run(main)
