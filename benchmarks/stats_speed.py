"""Statistics collection against a plain forward pass over the same images.

  python benchmarks/stats_speed.py                # writes stats_speed.json
  python benchmarks/stats_speed.py --quick --out /tmp/s.json   # tests

ThiNet's data cost is `depgraph.collect` (on the traced preset): a jitted
evaluation of the traced program up to the consumers, the Gram matrix of
their inputs' contributions (and the per-channel sums and zero counts
beside it), added up on the host in float64. For one group of
each stage of the shipped `vgg16-fmnist` (conv1_1, conv2_1, conv3_1,
conv4_1) and both modes (`sampled`: the paper's 10 random (position,
output) samples per image; `exhaustive`: every position and output), the
steady cost per 128-image batch, against one jitted forward pass of the
whole network on the same batch (the ratio is the overhead of collecting).

Each `collect` call builds its own jitted step; a persistent compilation
cache (a temporary directory) lets every call after the first load it
instead of compiling again, and the steady cost per batch is measured as
(time of 2n batches - time of n batches) / n, so what is left of the
per-call overhead cancels. The first call's time (with compilation) is
reported beside it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

from thinet_jax import (
  data,
  depgraph,
  factories,
  groups,
  models,
  sharding,
  train,
)
from thinet_jax import report as report_lib

OUT = pathlib.Path(__file__).resolve().parent / "stats_speed.json"
BASELINE = "baselines/vgg16-fmnist"
GROUPS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1")
MODES = ("sampled", "exhaustive")


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def forward_per_batch(spec, variables, batches, repeat: int = 3) -> float:
  """Median seconds of one jitted eval forward per batch (after compile),
  split over the devices and fed from host arrays as `collect` does."""
  mesh = sharding.data_mesh()
  forward = jax.jit(models.build(spec).apply)
  variables = sharding.replicate(variables, mesh)

  def one(batch):
    x = sharding.shard_batch({"image": batch["image"]}, mesh)["image"]
    return jax.block_until_ready(forward(variables, x))

  one(batches[0])
  times = [
    _seconds(lambda: [one(b) for b in batches]) / len(batches)
    for _ in range(repeat)
  ]
  return float(np.median(times))


def collect_per_batch(traced, variables, name, batches, mode) -> dict:
  """First call (n batches, with compilation) and the steady cost per
  batch, (t(2n) - t(n)) / n."""
  n = len(batches) // 2

  def run(m):
    depgraph.collect(
      traced, variables, traced.group(name), batches[:m], mode=mode,
      key=jax.random.key(0),
    )  # fmt: skip

  first = _seconds(lambda: run(n))
  t_n = _seconds(lambda: run(n))
  t_2n = _seconds(lambda: run(2 * n))
  return {"first_call_s": first, "per_batch_s": max(t_2n - t_n, 0.0) / n}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny, random")
  parser.add_argument("--batches", type=int, default=64)
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args()
  start = time.perf_counter()
  cache = tempfile.mkdtemp(prefix="stats-speed-cache-")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  if args.quick:
    import quick_model

    spec = quick_model.SPEC
    variables = models.init(spec, jax.random.key(0), quick_model.IMAGE_SIZE)
    rng = np.random.default_rng(0)
    size = quick_model.IMAGE_SIZE
    batches = [
      {"image": rng.normal(size=(16, size, size, 1)).astype(np.float32)}
      for _ in range(4)
    ]
    names = [g.name for g in groups.paper_groups(spec)][:1]
  else:
    spec, variables, _ = train.load_model(BASELINE)
    ds = data.dataset(
      "fashion_mnist", "test", batch_size=128, image_size=32, train=False
    )
    batches = [
      {"image": np.asarray(b["image"])}
      for _, b in zip(range(args.batches), ds, strict=False)
    ]
    names = list(GROUPS)
  forward_s = forward_per_batch(spec, variables, batches)
  rows = []
  traced = factories.graph_of(spec, batches[0]["image"].shape[1])
  for name in names:
    for mode in MODES:
      row = collect_per_batch(traced, variables, name, batches, mode)
      row |= {
        "group": name,
        "mode": mode,
        "ratio": row["per_batch_s"] / forward_s,
      }
      rows.append(row)
      print(
        f"{name} {mode}: {1e3 * row['per_batch_s']:.1f} ms/batch, "
        f"{row['ratio']:.2f}x a forward pass (first call "
        f"{row['first_call_s']:.1f} s)",
        flush=True,
      )
  result = {
    "machine": report_lib.machine(),
    "command": "python benchmarks/stats_speed.py"
    + (" --quick" if args.quick else f" --batches {args.batches}"),
    "batch_size": len(batches[0]["image"]),
    "batches": len(batches),
    "devices": jax.device_count(),
    "forward_per_batch_s": forward_s,
    "rows": rows,
    "wall_s": time.perf_counter() - start,
  }
  pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  shutil.rmtree(cache, ignore_errors=True)
  print(f"forward pass: {1e3 * forward_s:.1f} ms/batch; wrote {args.out}")


if __name__ == "__main__":
  main()
