"""Measured speed of a pruned model against its original, on this machine.

  python benchmarks/latency.py --baseline baselines/vgg16-fmnist \\
      --pruned runs/prune/model        # writes runs/prune/latency.json
  python benchmarks/latency.py --quick --out /tmp/latency.json  # seconds

A measurement goes beside the pruned model (into its run's workdir) unless
`--out` says otherwise; the committed benchmarks/latency.json is rewritten
only by naming it (`--out benchmarks/latency.json`).

Inference: the jitted eval forward at batch 1, 32 and 128 (median of many
calls after compilation, images/s). Training: one jitted SGD step at batch
128. Reports the measured speed-up beside the FLOPs reduction: pruning
libraries are often judged by FLOPs alone, and real speed-ups fall short of
them, more so at small batches where fixed per-layer costs dominate.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import quick_model

from configs import default
from thinet_jax import groups, models, profile, surgery, train
from thinet_jax import report as report_lib

OUT = pathlib.Path(__file__).resolve().parent / "latency.json"


def _median_seconds(fn, repeat: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure(spec, variables, image_size, batches, repeat) -> dict:
  forward = jax.jit(models.build(spec).apply)
  rng = np.random.default_rng(0)
  out = {"flops": profile.count(spec, image_size)["flops"]}
  for b in batches:
    x = jnp.asarray(
      rng.normal(size=(b, image_size, image_size, spec.in_channels)),
      jnp.float32,
    )
    s = _median_seconds(lambda x=x: forward(variables, x), repeat)
    out[f"infer_b{b}_s"] = s
    out[f"infer_b{b}_images_per_s"] = b / s
  config = default.get_config()
  tx = train.optimizer(config, steps_per_epoch=100)
  step = jax.jit(train.make_train_step(spec, tx))
  state = jax.device_put(train.create_state(variables, tx))
  b = max(batches)
  batch = {
    "image": jnp.asarray(
      rng.normal(size=(b, image_size, image_size, spec.in_channels)),
      jnp.float32,
    ),
    "label": jnp.asarray(rng.integers(0, spec.num_classes, b), jnp.int32),
  }
  out[f"train_step_b{b}_s"] = _median_seconds(
    lambda: step(state, batch)[1]["loss"], max(3, repeat // 5)
  )
  return out


def summarise(o: dict, p: dict, batches) -> dict:
  """Speed-ups of `p` over `o` (two `measure` results), each beside the
  FLOPs reduction."""
  flops_ratio = o["flops"] / p["flops"]
  summary = {"flops_reduction": flops_ratio}
  for b in batches:
    speedup = o[f"infer_b{b}_s"] / p[f"infer_b{b}_s"]
    summary[f"infer_b{b}_speedup"] = speedup
    summary[f"infer_b{b}_speedup_over_flops_reduction"] = speedup / flops_ratio
  b = max(batches)
  summary[f"train_b{b}_speedup"] = (
    o[f"train_step_b{b}_s"] / p[f"train_step_b{b}_s"]
  )
  return summary


def _half_width(spec, variables):
  """ThiNet-Conv-shaped variant (first-stage-to-fourth-stage convs halved)
  with arbitrary kept channels: the speed does not depend on which."""
  for g in groups.paper_groups(spec):
    g = groups.get(spec, g.name)
    spec, variables = surgery.prune(
      spec, variables, g, np.arange(max(1, g.width // 2))
    )
  return spec, variables


def _is_committed(path: str) -> bool:
  return pathlib.Path(path).resolve() == OUT


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--baseline", help="model dir of the original")
  parser.add_argument("--pruned", help="model dir of the pruned model")
  parser.add_argument("--quick", action="store_true", help="tiny, random")
  parser.add_argument("--repeat", type=int, default=50)
  parser.add_argument(
    "--out", help="JSON to write (default: latency.json in the pruned "
    "model's run folder; required with --quick)",
  )  # fmt: skip
  args = parser.parse_args()
  if args.out is None:
    if args.quick or not args.pruned:
      parser.error("--quick needs --out (the committed results are not its)")
    args.out = str(pathlib.Path(args.pruned).resolve().parent / "latency.json")
  start = time.perf_counter()
  if args.quick:
    spec = quick_model.SPEC
    variables = models.init(spec, jax.random.key(0), 32)
    models_ = {
      "original": (spec, variables),
      "pruned": _half_width(spec, variables),
    }
    image_size, batches, repeat = 32, (1, 8), 3
  else:
    if not (args.baseline and args.pruned):
      parser.error("--baseline and --pruned are required (or --quick)")
    loaded = {
      "original": train.load_model(args.baseline),
      "pruned": train.load_model(args.pruned),
    }
    models_ = {k: (v[0], v[1]) for k, v in loaded.items()}
    image_size = loaded["original"][2]["image_size"]
    batches, repeat = (1, 32, 128), args.repeat
  rows = {
    name: measure(spec, variables, image_size, batches, repeat)
    for name, (spec, variables) in models_.items()
  }
  o, p = rows["original"], rows["pruned"]
  summary = summarise(o, p, batches)
  report = {
    "machine": report_lib.machine(),
    "command": "python benchmarks/latency.py "
    + (
      "--quick"
      if args.quick
      else f"--baseline {args.baseline} --pruned {args.pruned}"
    )
    + (" --out benchmarks/latency.json" if _is_committed(args.out) else ""),
    "models": rows,
    "summary": summary,
    "wall_s": time.perf_counter() - start,
  }
  pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
  print(f"FLOPs reduction {summary['flops_reduction']:.2f}x")
  for b in batches:
    print(
      f"batch {b:4d}: original {b / o[f'infer_b{b}_s']:9.0f} img/s, pruned "
      f"{b / p[f'infer_b{b}_s']:9.0f} img/s, speed-up "
      f"{summary[f'infer_b{b}_speedup']:.2f}x"
    )
  print(f"train step b{b}: speed-up {summary[f'train_b{b}_speedup']:.2f}x")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
