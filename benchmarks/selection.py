"""Selection methods one layer at a time, right after pruning (no fine-tune).

  python benchmarks/selection.py                 # writes selection.json
  python benchmarks/selection.py --quick --out /tmp/s.json   # tests

The paper's comparison of selection methods (section 4.1, its Figure 4):
every group of ThiNet-Conv (conv1_1 .. conv4_3 of the shipped
`vgg16-fmnist`) is pruned *alone* to each keep ratio 0.3 .. 0.9 by each
method, the rest of the network untouched, and the test accuracy is
measured right after pruning; then the mean over the ten groups. Methods:

* `random` (seeds 0, 1, 2), `weight_sum` (L1 norm of the filter), `apoz`
  (average percentage of zeros), each with least-squares rescaling;
* `thinet_no_ls`: ThiNet's greedy selection, the kept channels unscaled;
* `thinet`: greedy selection and least squares (the paper's method).

Statistics are collected once, as `configs/fmnist_vgg16_sweep.py` says (100
training images per class, 10 samples each); each (group, method) is one
`sweep.plan` and one `sweep.evaluate_sweep`, the K ratios in one vmapped
pass. Accuracy is on the first `--eval-batches` x 128 test images (default
10: 1,280 images; every sweep evaluates 7 variants, and there are 70).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import numpy as np

from thinet_jax import groups, models, stats, sweep, train
from thinet_jax import report as report_lib

OUT = pathlib.Path(__file__).resolve().parent / "selection.json"
RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Method -> (criterion, least squares).
METHODS = {
  "random": ("random", True),
  "weight_sum": ("weight_sum", True),
  "apoz": ("apoz", True),
  "thinet_no_ls": ("thinet", False),
  "thinet": ("thinet", True),
}
SEEDS = (0, 1, 2)  # Only where randomness enters (the random method).


def per_layer(spec, variables, group_stats, ratios, eval_batches, seeds):
  """{group: {method: [per seed: {"accuracy": [K], "relative_error": [K]}]}}"""
  out = {}
  for name, st in group_stats.items():
    out[name] = {}
    for method, (criterion, ls) in METHODS.items():
      runs = []
      for seed in seeds if criterion == "random" else seeds[:1]:
        sw = sweep.plan(
          spec, variables, {name: st}, ratios, criterion=criterion,
          least_squares=ls, key=jax.random.key(seed),
        )  # fmt: skip
        results = sweep.evaluate_sweep(spec, variables, sw, eval_batches())
        runs.append({
          "seed": seed,
          "counts": [int(c) for c in sw.counts[:, 0]],
          "accuracy": [r["accuracy"] for r in results],
          "relative_error": [
            sweep.masked_errors_of(sw, {name: st}, k)[name]
            for k in range(len(ratios))
          ],
        })  # fmt: skip
      out[name][method] = runs
      accs = " ".join(f"{a:.3f}" for a in runs[0]["accuracy"])
      print(f"{name} {method}: {accs}", flush=True)
  return out


def summarise(layers: dict, n_ratios: int) -> dict:
  """method -> {"accuracy", "relative_error"}: per ratio, (mean, spread)
  of the mean over groups; the spread is over seeds (0 for one seed)."""
  out = {}
  for method in METHODS:
    entry = {}
    for key in ("accuracy", "relative_error"):
      per_seed = [
        [
          statistics.fmean(layers[g][method][s][key][k] for g in layers)
          for k in range(n_ratios)
        ]
        for s in range(len(next(iter(layers.values()))[method]))
      ]
      entry[key] = [
        (
          statistics.fmean(v[k] for v in per_seed),
          statistics.stdev(v[k] for v in per_seed) if len(per_seed) > 1
          else 0.0,
        )
        for k in range(n_ratios)
      ]  # fmt: skip
    out[method] = entry
  return out


def markdown(result: dict, key: str = "accuracy") -> str:
  """Methods x keep ratios, mean over groups (± spread over seeds)."""
  ratios = result["ratios"]
  lines = [
    "| method | " + " | ".join(f"keep {r:g}" for r in ratios) + " |",
    "|---|" + "---:|" * len(ratios),
  ]
  for method, entry in result["summary"].items():
    cells = []
    for mean, spread in entry[key]:
      scale = 100 if key == "accuracy" else 1
      digits = 2 if key == "accuracy" else 4
      cell = f"{scale * mean:.{digits}f}"
      if spread:
        cell += f" ± {scale * spread:.{digits}f}"
      cells.append(cell)
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _quick_setup():
  """The quick model with random weights and random images: seconds."""
  import quick_model

  spec = quick_model.SPEC
  variables = models.init(spec, jax.random.key(0), quick_model.IMAGE_SIZE)
  rng = np.random.default_rng(0)
  size = quick_model.IMAGE_SIZE
  images = np.abs(rng.normal(size=(32, size, size, 1))).astype(np.float32)
  labels = rng.integers(0, 10, 32).astype(np.int32)
  batches = [{"image": images[i : i + 16], "label": labels[i : i + 16]}
             for i in (0, 16)]  # fmt: skip
  names = [g.name for g in groups.paper_groups(spec)][:2]
  group_stats = stats.collect_groups(
    spec, variables, names, lambda: [{"image": images}], progress=False
  )
  return spec, variables, group_stats, lambda: batches


def _setup(eval_batches: int):
  """The shipped baseline, statistics as the sweep config says, the first
  `eval_batches` test batches."""
  from configs import fmnist_vgg16_sweep
  from train import common

  config = fmnist_vgg16_sweep.get_config()
  config.eval_batches = eval_batches
  run = common.setup(config)
  names = [g.name for g in groups.paper_groups(run.spec)]
  batches = common.stats_batches(config)
  group_stats = stats.collect_groups(
    run.spec, run.variables, names, lambda: batches(config.seed),
    key=jax.random.key(config.seed), mode=config.stats_mode,
    samples_per_image=config.samples_per_image,
  )  # fmt: skip
  return run.spec, run.variables, group_stats, run.eval_data


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny, random")
  parser.add_argument("--eval-batches", type=int, default=10)
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args()
  start = time.perf_counter()
  if args.quick:
    spec, variables, group_stats, eval_batches = _quick_setup()
    ratios, seeds = (0.5, 0.75), SEEDS[:2]
  else:
    spec, variables, group_stats, eval_batches = _setup(args.eval_batches)
    ratios, seeds = RATIOS, SEEDS
  baseline = train.evaluate(spec, variables, eval_batches())["accuracy"]
  layers = per_layer(spec, variables, group_stats, ratios, eval_batches, seeds)
  images = sum(len(b["label"]) for b in eval_batches())
  result = {
    "machine": report_lib.machine(),
    "command": "python benchmarks/selection.py"
    + (" --quick" if args.quick else f" --eval-batches {args.eval_batches}"),
    "ratios": list(ratios),
    "seeds": list(seeds),
    "eval_images": images,
    "baseline_accuracy": baseline,
    "layers": layers,
    "summary": summarise(layers, len(ratios)),
    "wall_s": time.perf_counter() - start,
  }
  pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  print(markdown(result))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
