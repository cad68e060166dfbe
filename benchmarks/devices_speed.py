"""Training-step throughput on 1 and 2 virtual CPU devices (data parallel).

  python benchmarks/devices_speed.py               # writes devices_speed.json
  python benchmarks/devices_speed.py --quick       # seconds; run by the tests

XLA's CPU backend runs one device's convolutions on a few threads; split
into virtual devices (`--xla_force_host_platform_device_count`), the
data-parallel step of `train.sharded_train_step` keeps every core busy. Each
device count runs in its own process (the flag must be set before JAX
starts): the jitted step of `vgg16-fmnist` on a 128-image batch, median of
many steps after compilation, and the same for the eval forward.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

OUT = pathlib.Path(__file__).resolve().parent / "devices_speed.json"


def measure(batch: int, repeat: int, quick: bool = False) -> dict:
  """Runs in the child: one device count, as set by XLA_FLAGS."""
  import jax
  import numpy as np
  import quick_model

  from configs import default
  from thinet_jax import models, presets, sharding, train

  spec = quick_model.SPEC if quick else presets.get("vgg16-fmnist")
  variables = models.init(spec, jax.random.key(0), 32)
  mesh = sharding.data_mesh()
  tx = train.optimizer(default.get_config(), steps_per_epoch=100)
  step = train.sharded_train_step(spec, tx, mesh)
  state = jax.device_put(
    train.create_state(variables, tx), sharding.replicated(mesh)
  )
  rng = np.random.default_rng(0)
  data = {
    "image": rng.normal(size=(batch, 32, 32, 1)).astype(np.float32),
    "label": rng.integers(0, 10, batch).astype(np.int32),
  }
  eval_step = train.jitted_eval_step(spec)
  times, eval_times = [], []
  for i in range(repeat + 2):  # two warm-up calls (compilation)
    start = time.perf_counter()
    state, metrics = step(state, sharding.shard_batch(data, mesh))
    jax.block_until_ready(metrics)
    if i >= 2:
      times.append(time.perf_counter() - start)
    start = time.perf_counter()
    jax.block_until_ready(
      eval_step(train.variables_of(state), sharding.shard_batch(data, mesh))
    )
    if i >= 2:
      eval_times.append(time.perf_counter() - start)
  step_s, eval_s = float(np.median(times)), float(np.median(eval_times))
  return {
    "devices": jax.device_count(),
    "batch": batch,
    "train_step_s": step_s,
    "train_images_per_s": batch / step_s,
    "eval_step_s": eval_s,
    "eval_images_per_s": batch / eval_s,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny batch")
  parser.add_argument("--devices", default="1,2")
  parser.add_argument("--repeat", type=int, default=20)
  parser.add_argument("--out", default=str(OUT))
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  batch, repeat = (16, 2) if args.quick else (128, args.repeat)
  if args.child:
    print(json.dumps(measure(batch, repeat, args.quick)))
    return
  start = time.perf_counter()
  rows = []
  for n in (int(d) for d in args.devices.split(",")):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, __file__, "--child", f"--repeat={repeat}"]
    if args.quick:
      cmd.append("--quick")
    out = subprocess.run(
      cmd, env=env, capture_output=True, text=True, check=True,
      cwd=pathlib.Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  from thinet_jax import report as report_lib

  base = rows[0]
  for r in rows:
    r["train_speedup"] = base["train_step_s"] / r["train_step_s"]
    r["eval_speedup"] = base["eval_step_s"] / r["eval_step_s"]
  result = {
    "machine": report_lib.machine(),
    "command": "python benchmarks/devices_speed.py"
    + (" --quick" if args.quick else ""),
    "rows": rows,
    "wall_s": time.perf_counter() - start,
  }
  pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  for r in rows:
    print(
      f"{r['devices']} device(s): train step {r['train_step_s'] * 1e3:.0f} ms"
      f" ({r['train_images_per_s']:.0f} img/s, {r['train_speedup']:.2f}x), "
      f"eval {r['eval_images_per_s']:.0f} img/s ({r['eval_speedup']:.2f}x)"
    )
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
