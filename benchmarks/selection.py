"""Selection methods one layer at a time, and all groups together.

  python benchmarks/selection.py                 # writes selection.json
  python benchmarks/selection.py --together      # selection_together.json
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

With `--together`, the ten groups are pruned at once to each keep ratio
(statistics of the unpruned model, as `train.sweep`): accuracy right after
pruning, and after a fixed short fine-tune of the variants at
`--finetune-ratios` (`--finetune-steps` SGD steps of 128 images at the
constant learning rate 0.005, each variant as the real smaller model; see
`make_finetune`). Random runs with seeds 0, 1, 2 (its channels and the
fine-tune's batches), the other methods with `--other-seeds` (the
fine-tune's batches). Every finished (method, seed) is kept in
`<out>.partial`, so an interrupted run resumes.

Statistics are collected once, as `configs/fmnist_vgg16_sweep.py` says (100
training images per class, 10 samples each; `depgraph.collect` on the
traced preset); each (group, method) is one `depgraph.joint_sweep` and one
`variants.evaluate_shared`, the K ratios in one vmapped pass on the
original kernels. Accuracy is on the first `--eval-batches` x 128 test
images (default 10: 1,280 images; every sweep evaluates 7 variants, and
there are 70).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import pathlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import (
  depgraph,
  factories,
  groups,
  models,
  train,
  variants,
)
from thinet_jax import report as report_lib
from thinet_jax.options import PruneOptions

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "selection.json"
OUT_TOGETHER = HERE / "selection_together.json"
RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Method -> (criterion, least squares).
METHODS = {
  "random": ("random", True),
  "weight_sum": ("weight_sum", True),
  "apoz": ("apoz", True),
  "thinet_no_ls": ("thinet", False),
  "thinet": ("thinet", True),
}
SEEDS = (0, 1, 2)  # Where randomness enters: random; every fine-tune.
FINETUNE_LR = 0.005  # The sweep config's; constant.


def joint(setup, names, ratios, criterion, least_squares, seed):
  """The groups `names` pruned together at each shared keep ratio: one
  `depgraph.joint_sweep` with the paper's fit (own-output target, no
  centring); the random criterion keyed by `seed` folded with the group's
  place in `names`."""
  traced = setup.traced
  counts = depgraph.uniform_counts(traced, names, list(ratios))
  options = PruneOptions(criterion=criterion, least_squares=least_squares)
  key = jax.random.key(seed)
  keys = {n: jax.random.fold_in(key, g) for g, n in enumerate(names)}
  per_group = {n: setup.group_stats[n] for n in names}
  return depgraph.joint_sweep(
    traced, setup.variables, per_group, counts, options, keys
  )


def per_layer(setup, ratios, seeds):
  """{group: {method: [per seed: {"accuracy": [K], "relative_error": [K]}]}}"""
  out = {}
  for name in setup.group_stats:
    out[name] = {}
    for method, (criterion, ls) in METHODS.items():
      runs = []
      for seed in seeds if criterion == "random" else seeds[:1]:
        sw = joint(setup, [name], ratios, criterion, ls, seed)
        results = variants.evaluate_shared(
          setup.spec, setup.traced, setup.variables, sw, setup.eval_batches()
        )
        runs.append({
          "seed": seed,
          "counts": [c[name] for c in sw.counts],
          "accuracy": [r["accuracy"] for r in results],
          "relative_error": [e[name] for e in sw.errors],
        })  # fmt: skip
      out[name][method] = runs
      accs = " ".join(f"{a:.3f}" for a in runs[0]["accuracy"])
      print(f"{name} {method}: {accs}", flush=True)
  return out


def _over_seeds(per_seed: list[list[float]]) -> list[tuple[float, float]]:
  """Per ratio: (mean, spread) over seeds (spread 0 for one seed)."""
  return [
    (
      statistics.fmean(column),
      statistics.stdev(column) if len(column) > 1 else 0.0,
    )
    for column in zip(*per_seed, strict=True)
  ]


def summarise(layers: dict, n_ratios: int) -> dict:
  """method -> {"accuracy", "relative_error"}: per ratio, (mean, spread)
  of the mean over groups; the spread is over seeds (0 for one seed)."""
  out = {}
  for method in METHODS:
    n_seeds = len(next(iter(layers.values()))[method])
    out[method] = {
      key: _over_seeds([
        [
          statistics.fmean(layers[g][method][s][key][k] for g in layers)
          for k in range(n_ratios)
        ]
        for s in range(n_seeds)
      ])
      for key in ("accuracy", "relative_error")
    }  # fmt: skip
  return out


def together(setup, ratios, seeds, finetune, finetune_ratios, partial=None):
  """All groups pruned at once by every method, with `seeds[method]`.

  `finetune(spec, variables, seed)` returns the fine-tuned variables of
  one (materialised, smaller) variant; the variants at `finetune_ratios`
  are fine-tuned. `partial`: a JSON path holding the runs done so far,
  rewritten after every run, so an interrupted benchmark resumes.
  Returns {method: [per seed: {"seed", "counts" [K][groups],
  "flops_fraction" [K], "accuracy" [K], "accuracy_finetuned" [F],
  "relative_error" [K] (mean over groups)}]}.
  """
  names = list(setup.group_stats)
  example = factories.example(setup.spec, setup.image_size)
  base = depgraph.count(setup.traced, example)["flops"]
  done = {}
  if partial and pathlib.Path(partial).exists():
    done = json.loads(pathlib.Path(partial).read_text())
  out = {}
  for method, (criterion, ls) in METHODS.items():
    out[method] = []
    for seed in seeds[method]:
      previous = [r for r in done.get(method, []) if r["seed"] == seed]
      if previous:
        out[method].append(previous[0])
        continue
      start = time.perf_counter()
      sw = joint(setup, names, ratios, criterion, ls, seed)
      pruned = variants.evaluate_shared(
        setup.spec, setup.traced, setup.variables, sw, setup.eval_batches()
      )
      tuned = []
      for ratio in finetune_ratios:  # Real smaller models, one at a time.
        k = ratios.index(ratio)
        _, small = depgraph.materialize_joint(
          setup.traced, setup.variables, sw, k
        )
        small_spec = groups.with_widths(setup.spec, sw.counts[k])
        tuned.append(train.evaluate(
          small_spec, finetune(small_spec, small, seed), setup.eval_batches()
        ))  # fmt: skip
      out[method].append({
        "seed": seed,
        "counts": [[c[n] for n in names] for c in sw.counts],
        "flops_fraction": [depgraph.count(m, example)["flops"] / base
                           for m in sw.shapes],
        "accuracy": [r["accuracy"] for r in pruned],
        "accuracy_finetuned": [r["accuracy"] for r in tuned],
        "relative_error": [statistics.fmean(e.values()) for e in sw.errors],
        "wall_s": time.perf_counter() - start,
      })  # fmt: skip
      run = out[method][-1]
      print(
        f"together {method} seed {seed}: "
        + " ".join(f"{a:.3f}" for a in run["accuracy"]) + " | tuned "
        + " ".join(f"{a:.3f}" for a in run["accuracy_finetuned"]),
        flush=True,
      )  # fmt: skip
      if partial:
        pathlib.Path(partial).write_text(json.dumps(out | {
          m: done[m] for m in done if m not in out
        }))  # fmt: skip
  return out


def summarise_together(runs: dict) -> dict:
  """method -> {key: per ratio (mean, spread over seeds)}."""
  return {
    method: {
      key: _over_seeds([r[key] for r in per_seed])
      for key in ("accuracy", "accuracy_finetuned", "relative_error")
    }
    for method, per_seed in runs.items()
  }


def markdown(result: dict, key: str = "accuracy") -> str:
  """Methods x keep ratios, mean over groups (± spread over seeds)."""
  ratios = result["ratios"]
  if key == "accuracy_finetuned":
    ratios = result["finetune_ratios"]
  lines = [
    "| method | " + " | ".join(f"keep {r:g}" for r in ratios) + " |",
    "|---|" + "---:|" * len(ratios),
  ]
  for method, entry in result["summary"].items():
    cells = []
    for mean, spread in entry[key]:
      scale = 100 if key.startswith("accuracy") else 1
      digits = 2 if key.startswith("accuracy") else 4
      cell = f"{scale * mean:.{digits}f}"
      if spread:
        cell += f" ± {scale * spread:.{digits}f}"
      cells.append(cell)
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


class Setup(NamedTuple):
  spec: Any
  variables: dict
  group_stats: dict  # group -> {consumer: GroupStats} (`depgraph.collect`)
  eval_batches: Callable[[], list]  # a fresh iterable of test batches
  train_batches: Callable[[int], Iterator]  # seed -> endless train batches
  image_size: int
  traced: Any  # the preset's traced inference function


def _collect(spec, variables, image_size, batches, key, **kw):
  """(traced model, every paper group's statistics), key folded per group."""
  traced = factories.graph_of(spec, image_size)
  names = [g.name for g in groups.paper_groups(spec)]
  return traced, {
    n: depgraph.collect(
      traced, variables, traced.group(n), batches(),
      key=jax.random.fold_in(key, i), **kw,
    )
    for i, n in enumerate(names)
  }  # fmt: skip


def _quick_setup() -> Setup:
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
  traced, group_stats = _collect(
    spec, variables, size, lambda: [{"image": images}], jax.random.key(0)
  )
  group_stats = dict(list(group_stats.items())[:2])
  return Setup(
    spec, variables, group_stats, lambda: batches,
    lambda seed: itertools.cycle(batches[seed % 2 :] + batches[: seed % 2]),
    size, traced,
  )  # fmt: skip


def _setup(eval_batches: int) -> Setup:
  """The shipped baseline, statistics as the sweep config says, the first
  `eval_batches` test batches."""
  from configs import fmnist_vgg16_sweep
  from train import common

  config = fmnist_vgg16_sweep.get_config()
  config.eval_batches = eval_batches
  run = common.setup(config)
  batches = common.stats_batches(config)
  traced, group_stats = _collect(
    run.spec, run.variables, config.image_size, lambda: batches(config.seed),
    jax.random.key(config.seed), mode=config.stats_mode,
    samples_per_image=config.samples_per_image, progress=True,
  )  # fmt: skip
  return Setup(
    run.spec, run.variables, group_stats, run.eval_data,
    lambda seed: run.train_data(config.seed + 1 + seed), config.image_size,
    traced,
  )  # fmt: skip


def make_finetune(setup: Setup, steps: int):
  """(spec, variables, seed) -> variables after `steps` SGD steps at the
  constant `FINETUNE_LR` (the default config's momentum and weight decay)
  on the train batches of that seed.

  Each variant is fine-tuned as the real smaller model, one after another:
  `variants.finetune_variants` (all K masked variants in one vmapped step)
  took ~50 s a step for K = 7 here (two other jobs sharing the 2 cores)
  where one step of the unpruned model takes ~0.4 s: XLA's CPU backend
  runs a convolution vmapped over its kernel far slower than K separate
  convolutions.
  """
  from configs import default

  config = default.get_config()
  config.learning_rate, config.schedule = FINETUNE_LR, "constant"
  config.warmup_epochs = 0.0
  tx = train.optimizer(config, steps_per_epoch=1)

  @functools.cache
  def step_of(spec):  # One compile per shape (the ratios repeat).
    return jax.jit(train.make_train_step(spec, tx), donate_argnums=0)

  def finetune(spec, variables, seed):
    state = train.create_state(jax.tree.map(jnp.array, variables), tx)
    step, mesh = step_of(spec), train.data_mesh()
    batches = iter(setup.train_batches(seed))
    for _ in range(steps):
      state, _ = step(state, train.shard_batch(next(batches), mesh))
    return train.variables_of(state)

  return finetune


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny, random")
  parser.add_argument(
    "--together",
    action="store_true",
    help="all groups at once, with a short fine-tune",
  )
  parser.add_argument("--eval-batches", type=int, default=10)
  parser.add_argument("--finetune-steps", type=int, default=50)
  parser.add_argument(
    "--finetune-ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7]
  )
  parser.add_argument(
    "--other-seeds",
    type=int,
    nargs="+",
    default=[0],
    help="--together: seeds of the deterministic methods "
    "(their fine-tune's batches); random uses 0 1 2",
  )
  parser.add_argument("--out", default="")
  args = parser.parse_args()  # fmt: skip
  start = time.perf_counter()
  if args.quick:
    setup = _quick_setup()
    ratios, seeds = (0.5, 0.75), SEEDS[:2]
    args.finetune_steps = min(args.finetune_steps, 2)
    args.finetune_ratios, args.other_seeds = [0.75], [0, 1]
  else:
    setup = _setup(args.eval_batches)
    ratios, seeds = RATIOS, SEEDS
  spec, variables, group_stats = setup[:3]
  baseline = train.evaluate(spec, variables, setup.eval_batches())["accuracy"]
  command = "python benchmarks/selection.py" + (
    " --quick" if args.quick else f" --eval-batches {args.eval_batches}"
  )
  result = {
    "machine": report_lib.machine(),
    "ratios": list(ratios),
    "seeds": list(seeds),
    "eval_images": sum(len(b["label"]) for b in setup.eval_batches()),
    "baseline_accuracy": baseline,
  }
  out = args.out or str(OUT_TOGETHER if args.together else OUT)
  if args.together:
    command += (
      f" --together --finetune-steps {args.finetune_steps} --finetune-ratios "
      + " ".join(map(str, args.finetune_ratios)) + " --other-seeds "
      + " ".join(map(str, args.other_seeds))
    )  # fmt: skip
    setup_s = time.perf_counter() - start
    method_seeds = {
      m: list(seeds) if c == "random" else args.other_seeds
      for m, (c, _) in METHODS.items()
    }
    runs = together(
      setup, list(ratios), method_seeds,
      make_finetune(setup, args.finetune_steps), args.finetune_ratios,
      partial=out + ".partial",
    )  # fmt: skip
    pathlib.Path(out + ".partial").unlink(missing_ok=True)
    result |= {
      "finetune_ratios": args.finetune_ratios,
      "other_seeds": args.other_seeds,
      "finetune_steps": args.finetune_steps,
      "finetune_lr": FINETUNE_LR,
      "groups": list(group_stats),
      "runs": runs,
      "summary": summarise_together(runs),
    }
  else:
    layers = per_layer(setup, list(ratios), seeds)
    result |= {"layers": layers, "summary": summarise(layers, len(ratios))}
  result["command"] = command
  result["wall_s"] = time.perf_counter() - start
  if args.together:  # Setup, and every run, also of interrupted calls.
    result["wall_s"] = setup_s + sum(
      r["wall_s"] for per in result["runs"].values() for r in per
    )
  pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
  print(markdown(result))
  if args.together:
    print(markdown(result, "accuracy_finetuned"))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
