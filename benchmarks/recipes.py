"""The paper's recipes on the CPU-sized models, against weight sum.

  python benchmarks/recipes.py                    # every row: hours
  python benchmarks/recipes.py --rows gap tiny --criteria thinet
  python benchmarks/recipes.py --finished-only    # tabulate, run nothing
  python benchmarks/recipes.py --quick --out /tmp/r.json   # tests

Every (recipe, criterion) is one `train.prune` run of ThiNet as published
(`:paper`) under the main job's schedule (0.1 epoch of fine-tuning after a
group, 0.2 after the last of a stage, a 1-epoch final fine-tune), with
the paper's greedy selection (`thinet`) or the L1 norm of the filters
(`weight_sum`, also with least squares) in its place:

* ThiNet-Conv: conv1_1 .. conv4_3 of `vgg16-fmnist` at half width
  (configs/fmnist_vgg16_thinet.py);
* ThiNet-GAP: the same after the fc head became global average pooling
  and one dense layer (configs/fmnist_vgg16_thinet_gap.py);
* ThiNet-Tiny: every conv at a quarter width, conv5_3 at half, GAP head
  (configs/fmnist_vgg16_thinet_tiny.py);
* ThiNet-70 / 50 / 30: branch2a and branch2b of every block of
  `resnet-fmnist` at 0.7 / 0.5 / 0.3 (configs/fmnist_resnet_thinet.py).

`--latency` also measures every row's pruned model against its baseline
on this CPU (`benchmarks/latency.py`'s jitted forward at batch 1, 32 and
128 and training step at 128, medians after compilation): the measured
speed-up beside the FLOPs reduction. Measure on an otherwise idle machine.

Runs live in <runs>/<row>; a finished one (report.json present) is read,
not rerun, and an interrupted one resumes, so the command can be stopped
and started again. ThiNet-Conv with `thinet` is the committed main-job run
of ThiNet as published (benchmarks/results/fmnist_vgg16_main_paper: the
same command) unless <runs> holds its own.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import ablation

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(__file__).resolve().parent / "recipes.json"
# Recipe -> (label, config, overrides).
RECIPES = {
  "conv": ("ThiNet-Conv", "configs/fmnist_vgg16_thinet.py", {}),
  "gap": ("ThiNet-GAP", "configs/fmnist_vgg16_thinet_gap.py", {}),
  "tiny": ("ThiNet-Tiny", "configs/fmnist_vgg16_thinet_tiny.py", {}),
  "70": ("ThiNet-70", "configs/fmnist_resnet_thinet.py", {"keep_ratio": 0.7}),
  "50": ("ThiNet-50", "configs/fmnist_resnet_thinet.py", {"keep_ratio": 0.5}),
  "30": ("ThiNet-30", "configs/fmnist_resnet_thinet.py", {"keep_ratio": 0.3}),
}
CRITERIA = ("thinet", "weight_sum")
COMMITTED = {("conv", "thinet"): "benchmarks/results/fmnist_vgg16_main_paper"}


def row_name(recipe: str, criterion: str) -> str:
  if recipe.isdigit():  # ThiNet-50 -> resnet-thinet50
    return f"resnet-{criterion}{recipe}"
  return f"vgg-{recipe}-{criterion}"


def command(recipe: str, criterion: str, workdir: str, quick: bool):
  _, config, overrides = RECIPES[recipe]
  arg = ":paper,runlocal" if quick else ":paper"
  if quick:  # runlocal's two groups; a ratio for each.
    overrides = {k: v for k, v in overrides.items() if k != "keep_ratio"}
  overrides = {**overrides, "criterion": criterion}
  return [
    sys.executable, "-m", "train.prune", f"--config={config}{arg}",
    f"--workdir={workdir}",
    *(f"--config.{k}={v}" for k, v in overrides.items()),
  ]  # fmt: skip


def run_one(recipe, criterion, runs, quick, finished_only) -> dict | None:
  """One row: runs train.prune unless its report exists; None when
  `finished_only` and it has not finished."""
  workdir = pathlib.Path(runs) / row_name(recipe, criterion)
  cmd = command(recipe, criterion, str(workdir), quick)
  report_path = workdir / "report.json"
  committed = COMMITTED.get((recipe, criterion))
  if not report_path.exists() and committed and not quick:
    report_path = ROOT / committed / "report.json"
  if not report_path.exists():
    if finished_only:
      return None
    ablation.run_resumable(cmd, row_name(recipe, criterion))
  report = json.loads(report_path.read_text())
  base, pruned = report["baseline"], report["pruned"]
  head = report.get("head")
  return {
    "recipe": RECIPES[recipe][0], "criterion": criterion,
    "model": report["config"]["model"],
    "command": " ".join(cmd[1:]).replace(str(workdir), f"runs/{workdir.name}"),
    "report": str(report_path.relative_to(ROOT))
    if report_path.is_relative_to(ROOT) else str(report_path),
    "baseline": {k: base[k] for k in ("accuracy", "params", "flops")},
    "params": pruned["params"], "flops": pruned["flops"],
    "params_reduction": report["params_reduction"],
    "flops_reduction": report["flops_reduction"],
    "head_accuracy": head and head["accuracy_least_squares"],
    "before_final_finetune": pruned["accuracy_before_final_finetune"],
    "accuracy": pruned["accuracy"],
    "accuracy_change": report["accuracy_change"],
    "wall_s": report["wall_s"],
  }  # fmt: skip


def add_latency(rows: list[dict], runs: str, repeat: int) -> None:
  """Adds "latency" (latency.py's summary) to every row whose pruned model
  is on disk, measuring each baseline once."""
  import latency

  from thinet_jax import train

  measured: dict[str, dict] = {}
  batches = (1, 32, 128)
  for row in rows:
    config = json.loads((ROOT / row["report"]).read_text())["config"]
    base_dir = str(ROOT / config["init_checkpoint"])
    if base_dir not in measured:
      spec, variables, meta = train.load_model(base_dir)
      measured[base_dir] = latency.measure(
        spec, variables, meta["image_size"], batches, repeat
      )
    model_dir = ROOT / pathlib.Path(row["report"]).parent / "model"
    if not model_dir.exists():  # A committed report without its model.
      print(f"{row['recipe']} {row['criterion']}: no model at {model_dir}")
      continue
    spec, variables, meta = train.load_model(str(model_dir))
    pruned = latency.measure(
      spec, variables, meta["image_size"], batches, repeat
    )
    row["latency"] = latency.summarise(measured[base_dir], pruned, batches)
    print(f"{row['recipe']} {row['criterion']}: {row['latency']}", flush=True)


def latency_markdown(rows: list[dict]) -> str:
  lines = [
    "| recipe | criterion | FLOPs reduction | batch 1 | batch 32 | "
    "batch 128 | train step (128) |",
    "|---|---|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    if "latency" not in r:
      continue
    s = r["latency"]
    lines.append(
      f"| {r['recipe']} | {r['criterion']} | {s['flops_reduction']:.2f}x | "
      + " | ".join(f"{s[f'infer_b{b}_speedup']:.2f}x" for b in (1, 32, 128))
      + f" | {s['train_b128_speedup']:.2f}x |"
    )
  return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
  lines = [
    "| recipe | criterion | params | FLOPs | before final FT | final | "
    "change | wall |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  model = None
  for r in rows:
    if r["model"] != model:
      model, b = r["model"], r["baseline"]
      lines.append(
        f"| `{model}` baseline | | {b['params']:,} | "
        f"{b['flops'] / 1e6:.2f}M | | {100 * b['accuracy']:.2f} | | |"
      )
    lines.append(
      f"| {r['recipe']} | {r['criterion']} | {r['params']:,} "
      f"({r['params_reduction']:.2f}x) | {r['flops'] / 1e6:.2f}M "
      f"({r['flops_reduction']:.2f}x) | {100 * r['before_final_finetune']:.2f}"
      f" | {100 * r['accuracy']:.2f} | {100 * r['accuracy_change']:+.2f} | "
      f"{r['wall_s'] / 60:.0f} min |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--rows", nargs="+", default=list(RECIPES), choices=list(RECIPES)
  )
  parser.add_argument(
    "--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA)
  )
  parser.add_argument("--runs", default="runs/recipes")
  parser.add_argument("--out", default=None)
  parser.add_argument(
    "--finished-only",
    action="store_true",
    help="tabulate the finished rows; run nothing",
  )
  parser.add_argument(
    "--latency",
    action="store_true",
    help="measure each pruned model's speed-up over its baseline",
  )
  parser.add_argument("--repeat", type=int, default=50)
  parser.add_argument(
    "--quick",
    action="store_true",
    help="ThiNet-Tiny with thinet, runlocal (tests)",
  )
  args = parser.parse_args()  # fmt: skip
  if args.quick:
    args.rows, args.criteria, args.repeat = ["tiny"], ["thinet"], 2
    if args.out is None:
      raise SystemExit("--quick needs --out (it must not replace results)")
    args.runs = str(pathlib.Path(args.out).with_suffix("")) + "_runs"
  from thinet_jax import report as report_lib

  start = time.time()
  rows = [
    run_one(recipe, criterion, args.runs, args.quick, args.finished_only)
    for recipe in args.rows
    for criterion in args.criteria
  ]
  rows = [r for r in rows if r is not None]
  if not rows:
    raise SystemExit(f"no finished runs under {args.runs}")
  if args.latency:
    add_latency(rows, args.runs, args.repeat)
  result = {
    "command": "python benchmarks/recipes.py " + " ".join(sys.argv[1:]),
    "machine": report_lib.machine(),
    "wall_s": time.time() - start,
    "rows": rows,
  }
  out = pathlib.Path(args.out or OUT)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(markdown(rows))
  if args.latency:
    print(latency_markdown(rows))


if __name__ == "__main__":
  main()
