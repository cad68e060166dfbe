"""Trains a config's model from scratch (or from a checkpoint); resumable.

  python -m train.main --config configs/fmnist_vgg16.py --workdir runs/vgg

Started again with the same command after an interruption, it continues from
the latest checkpoint in <workdir>/checkpoints. Writes <workdir>/metrics.jsonl,
<workdir>/report.json and the trained model to <workdir>/model (a checkpoint
holding the spec, restorable with `train.Checkpointer(dir).restore()`).
"""

import os
import time

from absl import app

from train import common

common.define_flags()


def main(argv):
  config, workdir, start = common.start(argv)
  run = common.setup(config)
  variables, history = common.fit(run, run.variables, workdir, "train")
  report = common.model_report(run, run.spec, variables, history)
  report["wall_s"] = time.time() - start
  report["config"] = config.to_dict()
  common.save_model(os.path.join(workdir, "model"), run, run.spec, variables)
  common.write_json(os.path.join(workdir, "report.json"), report)
  print(
    f"{config.model}: test accuracy {report['accuracy']:.4f} "
    f"({report['examples']} images), {report['params']:,} params, "
    f"{report['flops']:,} FLOPs; model in {workdir}/model"
  )


if __name__ == "__main__":
  app.run(main)
