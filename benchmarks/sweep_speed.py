"""A K-ratio sweep in one vmapped call against one variant and a loop.

  python benchmarks/sweep_speed.py                 # writes sweep_speed.json
  python benchmarks/sweep_speed.py --quick         # seconds; run by the tests

ThiNet-Conv's groups of the shipped `vgg16-fmnist` baseline at K keep
ratios. Timed, after compilation, over the same eval batches (median of a
few passes):

* `shared`: all K variants in one jitted `jax.vmap` over the consumers'
  input scales only, kernels shared (`variants.evaluate_shared`, on the
  traced program): one K-times larger batch;
* `vmapped`: all K stacked masked variants in one jitted `jax.vmap`-ed
  forward (`variants.evaluate_variants`), as fine-tuned variants need;
* `one_variant`: one masked variant, a plain forward (`train.evaluate`);
* `loop_masked`: the K masked variants one after another (K x one_variant);
* `loop_materialised`: the K real, smaller models one after another
  (`depgraph.materialize_joint`), steady state, plus the compile time
  each of them needs (every width is a new shape; the vmapped sweep
  compiles once).

The ratio loop / vmapped says what one larger batch buys on this machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np
import quick_model

from thinet_jax import (
  data,
  depgraph,
  factories,
  groups,
  models,
  train,
  variants,
)
from thinet_jax import report as report_lib
from thinet_jax.options import PruneOptions

OUT = pathlib.Path(__file__).resolve().parent / "sweep_speed.json"
BASELINE = "baselines/vgg16-fmnist"


def _timed(fn, repeat: int) -> float:
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def run(spec, variables, ratios, batches, repeat) -> dict:
  size = batches[0]["image"].shape[1]
  traced = factories.graph_of(spec, size)
  names = [g.name for g in groups.paper_groups(spec)]
  stats_batch = [{"image": batches[0]["image"]}]
  per_group = {
    n: depgraph.collect(traced, variables, traced.group(n), stats_batch)
    for n in names
  }  # fmt: skip
  counts = depgraph.uniform_counts(traced, names, list(ratios))
  sw = depgraph.joint_sweep(
    traced, variables, per_group, counts, PruneOptions()
  )
  stacked = depgraph.stack(traced, variables, sw)
  first = jax.tree.map(lambda x: x[0], stacked)

  def shared():
    return variants.evaluate_shared(spec, traced, variables, sw, batches)

  def vmapped():
    return variants.evaluate_variants(spec, stacked, batches)

  def one_variant():  # A plain forward of one full-size masked model.
    return train.evaluate(spec, first, batches)

  shared(), vmapped(), one_variant()  # compile
  t_shared = _timed(shared, repeat)
  t_vmapped = _timed(vmapped, repeat)
  t_one = _timed(one_variant, repeat)
  materialised = [
    (
      groups.with_widths(spec, sw.counts[k]),
      depgraph.materialize_joint(traced, variables, sw, k)[1],
    )
    for k in range(len(ratios))
  ]
  compile_s, steady_s = 0.0, 0.0
  for small_spec, small_vars in materialised:
    start = time.perf_counter()
    train.evaluate(small_spec, small_vars, batches[:1])
    compile_s += time.perf_counter() - start
    steady_s += _timed(
      lambda s=small_spec, v=small_vars: train.evaluate(s, v, batches), repeat
    )
  images = sum(len(b["label"]) for b in batches)
  k = len(ratios)
  return {
    "variants": k,
    "images": images,
    "shared_s": t_shared,
    "vmapped_s": t_vmapped,
    "one_variant_s": t_one,
    "loop_masked_s": k * t_one,
    "loop_materialised_s": steady_s,
    "loop_materialised_compile_s": compile_s,
    "loop_masked_over_shared": k * t_one / t_shared,
    "loop_materialised_over_shared": steady_s / t_shared,
    "loop_masked_over_vmapped": k * t_one / t_vmapped,
    "loop_materialised_over_vmapped": steady_s / t_vmapped,
    "vmapped_over_one_variant": t_vmapped / t_one,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny, random")
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--repeat", type=int, default=3)
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args()
  start = time.perf_counter()
  if args.quick:
    spec = quick_model.SPEC
    variables = models.init(spec, jax.random.key(0), 32)
    ratios, n_batches, batch_size, repeat = (0.5, 0.8), 2, 16, 1
    rng = np.random.default_rng(0)
    batches = [
      {
        "image": rng.normal(size=(batch_size, 32, 32, 1)).astype(np.float32),
        "label": rng.integers(0, 10, batch_size).astype(np.int32),
      }
      for _ in range(n_batches)
    ]
  else:
    spec, variables, _ = train.load_model(BASELINE)
    ratios = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    repeat = args.repeat
    ds = data.dataset("fashion_mnist", "test", batch_size=128, image_size=32,
                      train=False)  # fmt: skip
    batches = [b for _, b in zip(range(args.batches), ds, strict=False)]
  row = run(spec, variables, list(ratios), batches, repeat)
  report = {
    "machine": report_lib.machine(),
    "command": "python benchmarks/sweep_speed.py"
    + (" --quick" if args.quick else ""),
    "ratios": list(ratios),
    **row,
    "wall_s": time.perf_counter() - start,
  }
  pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
  print(
    f"{row['variants']} variants x {row['images']} images: shared kernels "
    f"{row['shared_s']:.2f} s, stacked vmapped {row['vmapped_s']:.2f} s, one"
    f" variant {row['one_variant_s']:.2f} s; loop of masked "
    f"{row['loop_masked_s']:.2f} s ({row['loop_masked_over_shared']:.2f}x the"
    f" shared), loop of real models {row['loop_materialised_s']:.2f} s "
    f"({row['loop_materialised_over_shared']:.2f}x) + "
    f"{row['loop_materialised_compile_s']:.1f} s compiling"
  )
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
