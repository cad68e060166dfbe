"""Builds a config's model, prints its profile, and runs it over real data.

  python -m train.describe --config configs/fmnist_vgg16.py --workdir runs/x

Writes <workdir>/report.json (profile, captured consumer inputs, accuracy,
eval throughput) and prints the per-layer table. The model is
`config.init_checkpoint` when set (`--config.init_checkpoint=runs/x/model`),
else freshly initialised with the config's seed, and then says so: its
accuracy is that of an untrained model.
"""

import os

import jax
from absl import flags, logging

from thinet_jax import data, describe, profile
from train import common

common.define_flags()
flags.adopt_module_key_flags(common.cli)


def main(argv):
  config, workdir, _ = common.start(argv)
  os.makedirs(workdir, exist_ok=True)
  common.validate_training(config)
  common.checkpoint_spec(config)  # the checkpoint fits config.model
  run = common.setup(config)
  model, variables = run.spec, run.variables
  print(profile.format_table(describe.profile(model, config.image_size)))
  trained = bool(config.init_checkpoint)
  eval_data = data.dataset(
    config.dataset,
    config.eval_split,
    data_dir=config.data_dir or None,
    batch_size=config.batch_size // jax.process_count(),
    image_size=config.image_size,
    train=False,
    **common.input_kwargs(config),
  )
  n = None if config.eval_batches < 0 else config.eval_batches
  report = describe.describe(
    model, variables, eval_data, config.image_size, num_batches=n
  )
  report["config"] = config.to_dict()
  path = os.path.join(workdir, "report.json")
  common.write_json(path, report)
  ips = report["eval_images_per_second"]
  print(
    f"{config.model}: {report['params']:,} params, "
    f"{profile.human(report['flops'])}FLOPs at {config.image_size}x"
    f"{config.image_size}; {report['examples']} {config.dataset} "
    f"{config.eval_split} images, accuracy {report['accuracy']:.4f} "
    + ("" if trained else "(untrained: set config.init_checkpoint) ")
    + "eval "
    + (f"{ips:,.0f} images/s" if ips else "throughput n/a (one batch)")
  )
  logging.info("report written to %s", path)
  print(f"report: {path}")


if __name__ == "__main__":
  common.run(main)
