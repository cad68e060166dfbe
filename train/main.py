r"""Trains a config's model from scratch (or from a checkpoint); resumable.

  python -m train.main --config configs/fmnist_vgg16.py --workdir runs/vgg

Started again with the same command after an interruption, it continues from
the latest checkpoint in <workdir>/checkpoints; started again after it
finished, it prints the result again. A rerun under another config stops
before any work and names the differing fields
(`--config.restart_from=train` trains again from the start). Writes
<workdir>/metrics.jsonl, <workdir>/report.json and the trained model to
<workdir>/model (a model directory: `thinet_jax.train.load_model(dir)`).
"""

import os

from absl import flags

from thinet_jax import rundir
from train import common

common.define_flags()
flags.adopt_module_key_flags(common.cli)


def main(argv):
  config, workdir, _ = common.start(argv)
  common.validate_training(config)
  common.checkpoint_spec(config)
  with common.locked(workdir):
    clock = rundir.WallClock(workdir)
    run = common.setup(config)
    step = rundir.Step(
      "train", os.path.join(workdir, rundir.FINGERPRINT),
      {**common.determinants(config, run.spec, run.variables),
       "final": common.final_determinants(config)},
      tuple(os.path.join(workdir, p) for p in
            ("checkpoints", "metrics.jsonl", rundir.FINGERPRINT)),
    )  # fmt: skip
    rundir.check_steps(
      [step], config.restart_from,
      later=[os.path.join(workdir, p) for p in ("model", "report.json")],
    )  # fmt: skip
    report = common.finished_report(workdir, ["model"])
    if report is None:
      rundir.claim_step(step.fingerprint, step.determinants)
      variables, history = common.fit(run, run.variables, workdir, "train")
      report = common.model_report(run, run.spec, variables, history)
      report["config"] = config.to_dict()
      common.save_model(
        os.path.join(workdir, "model"), run, run.spec, variables
      )
      report["wall"] = clock.tick()
      report["wall_s"] = report["wall"]["total_s"]
      common.write_json(os.path.join(workdir, "report.json"), report)
    else:
      print(f"{workdir} holds a finished run of this config; its result:")
  print(
    f"{config.model}: test accuracy {report['accuracy']:.4f} "
    f"({report['examples']} images), {report['params']:,} params, "
    f"{report['flops']:,} FLOPs; model in {workdir}/model"
  )


if __name__ == "__main__":
  common.run(main)
