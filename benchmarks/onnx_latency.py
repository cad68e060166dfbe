"""ONNX export of pruned models: onnxruntime's CPU latency against the
unpruned model, and agreement with JAX.

  python benchmarks/onnx_latency.py \\
      --pair vgg16-fmnist baselines/vgg16-fmnist runs/prune/model \\
      --pair resnet-fmnist baselines/resnet-fmnist runs/resnet50/model
  python benchmarks/onnx_latency.py --quick --out /tmp/o.json   # tests

Every model is exported with `thinet_jax.onnx_export.to_onnx` (NCHW input)
and run by onnxruntime's CPU execution provider with its default threads:
median time of a call at batch 1, 32 and 128 after two warm-up calls, and
the largest difference from the JAX logits on 8 random images (relative to
the largest JAX logit).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from thinet_jax import models, onnx_export, profile, train
from thinet_jax import report as report_lib

BATCHES = (1, 32, 128)


def measure(spec, variables, image_size, batches, repeat) -> dict:
  import onnxruntime

  proto = onnx_export.to_onnx(spec, variables, image_size)
  session = onnxruntime.InferenceSession(
    proto.SerializeToString(), providers=["CPUExecutionProvider"]
  )
  rng = np.random.default_rng(0)
  shape = (image_size, image_size, spec.in_channels)
  x = rng.normal(size=(8, *shape)).astype(np.float32)
  want = np.asarray(models.build(spec).apply(variables, x))
  got = session.run(None, {"images": x.transpose(0, 3, 1, 2)})[0]
  out = {
    **{k: profile.count(spec, image_size)[k] for k in ("params", "flops")},
    "max_diff_over_max_logit": float(
      np.abs(got - want).max() / np.abs(want).max()
    ),
  }
  for b in batches:
    images = rng.normal(size=(b, *shape)).astype(np.float32)
    feed = {"images": images.transpose(0, 3, 1, 2)}
    for _ in range(2):
      session.run(None, feed)
    times = []
    for _ in range(max(3, repeat // max(1, b // 16))):
      start = time.perf_counter()
      session.run(None, feed)
      times.append(time.perf_counter() - start)
    out[f"b{b}_s"] = float(np.median(times))
  return out


def markdown(result: dict) -> str:
  rows, batches = result["rows"], result["batches"]
  lines = [
    "| model | params | FLOPs | " + " | ".join(
      f"batch {b}" for b in batches
    ) + " | max diff from JAX |",
    "|---|---:|---:|" + "---:|" * len(batches) + "---:|",
  ]  # fmt: skip
  for r in rows:
    for kind in ("original", "pruned"):
      m = r[kind]
      cells = []
      for b in batches:
        cell = f"{1e3 * m[f'b{b}_s']:.2f} ms"
        if kind == "pruned":
          cell += f" ({r['original'][f'b{b}_s'] / m[f'b{b}_s']:.2f}x)"
        cells.append(cell)
      lines.append(
        f"| {r['name']} {kind} | {m['params']:,} | "
        f"{m['flops'] / 1e6:.2f}M | "
        + " | ".join(cells)
        + f" | {m['max_diff_over_max_logit']:.1e} |"
      )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--pair",
    nargs=3,
    action="append",
    default=[],
    metavar=("NAME", "ORIGINAL", "PRUNED"),
  )
  parser.add_argument("--repeat", type=int, default=50)
  parser.add_argument("--quick", action="store_true", help="tiny, random")
  parser.add_argument(
    "--out", help="JSON to write (default: onnx_latency.json beside the "
    "first pair's pruned model; required with --quick). The committed "
    "benchmarks/onnx_latency.json is rewritten only when named.",
  )  # fmt: skip
  args = parser.parse_args()  # fmt: skip
  if args.out is None:
    if args.quick or not args.pair:
      parser.error("--quick needs --out (the committed results are not its)")
    args.out = str(
      pathlib.Path(args.pair[0][2]).resolve().parent / "onnx_latency.json"
    )
  start = time.perf_counter()
  rows = []
  if args.quick:
    import jax
    import latency
    import quick_model

    spec = quick_model.SPEC
    variables = models.init(spec, jax.random.key(0), quick_model.IMAGE_SIZE)
    pairs = [("quick", (spec, variables), latency._half_width(spec, variables))]
    size, batches, repeat = quick_model.IMAGE_SIZE, (1, 8), 3
  else:
    if not args.pair:
      parser.error("give at least one --pair NAME ORIGINAL PRUNED (or --quick)")
    pairs = [
      (name, train.load_model(a)[:2], train.load_model(b)[:2])
      for name, a, b in args.pair
    ]
    size = train.load_model(args.pair[0][1])[2]["image_size"]
    batches, repeat = BATCHES, args.repeat
  for name, original, pruned in pairs:
    rows.append({
      "name": name,
      "original": measure(*original, size, batches, repeat),
      "pruned": measure(*pruned, size, batches, repeat),
    })  # fmt: skip
  command = "python benchmarks/onnx_latency.py " + (
    "--quick" if args.quick
    else " ".join(f"--pair {' '.join(p)}" for p in args.pair)
  )  # fmt: skip
  import onnxruntime

  result = {
    "machine": report_lib.machine(),
    "onnxruntime": onnxruntime.__version__,
    "command": command,
    "batches": list(batches),
    "rows": rows,
    "wall_s": time.perf_counter() - start,
  }
  pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  print(markdown(result))


if __name__ == "__main__":
  main()
