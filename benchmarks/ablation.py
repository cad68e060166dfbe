"""Ablation: the plain criteria, ThiNet as published, and each addition.

  python benchmarks/ablation.py --budget oneshot          # budget (i)
  python benchmarks/ablation.py --budget procedure        # budget (ii)
  python benchmarks/ablation.py --budget oneshot --rows thinet weight_sum \\
      --seeds 0                                           # a subset
  python benchmarks/ablation.py --budget oneshot --no-finetune  # minutes
  python benchmarks/ablation.py --quick --out /tmp/a.json # a minute (tests)

Every (row, seed) is one `train.prune` run on the shipped `vgg16-fmnist`
baseline in <runs>/<budget>/<row>/seed<seed>; a finished run (report.json
present) is read, not rerun, and an interrupted one resumes, so the command
can be stopped and started again at any time. Budgets:

* `oneshot` (configs/fmnist_vgg16_oneshot.py): conv1_1 .. conv4_3 to half
  width in one pass, no fine-tuning between groups, then exactly 2 epochs
  (SGD momentum 0.9, weight decay 5e-4, lr 0.01 cosine to 0, batch 128).
* `procedure` (configs/fmnist_vgg16_thinet_long.py): the paper's
  layer-by-layer procedure with the 12-epoch final fine-tune.

Rows (`ROWS`): random, weight_sum, apoz and ThiNet as published (greedy,
uncentred least squares), then each addition on its own, then all of them.
Columns: accuracy before fine-tuning, after each fine-tuning epoch, FLOPs
reduction, wall time; mean and spread (sample standard deviation) over the
seeds. Writes JSON (`--out`) and Markdown (the same path, .md).
`--finished-only` tabulates what has finished and runs nothing.
`--no-finetune` stops every run before its final fine-tune (accuracy right
after pruning only; runs in <runs>/<budget>-no-finetune); a later one-shot
run with fine-tuning starts from that pass instead of repeating it (its
wall time is the pass's plus the fine-tune's).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

from configs.default import PAPER_METHOD

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(__file__).resolve().parent / "ablation_{budget}.json"

CONFIGS = {
  "oneshot": "configs/fmnist_vgg16_oneshot.py",
  "procedure": "configs/fmnist_vgg16_thinet_long.py",
}

# Row -> train.prune config overrides (on top of the budget's config); every
# row sets every field it is about, so rows do not follow config defaults.
_PUBLISHED = dict(PAPER_METHOD)  # ThiNet as published.
ROWS: dict[str, dict] = {
  "random": {**_PUBLISHED, "criterion": "random"},
  "weight_sum": {**_PUBLISHED, "criterion": "weight_sum"},
  "apoz": {**_PUBLISHED, "criterion": "apoz"},
  "thinet": _PUBLISHED,
  "+centred_fit": {**_PUBLISHED, "centred": True},
  "+centred_greedy": {**_PUBLISHED, "criterion": "thinet_centred"},
  "+forward": {**_PUBLISHED, "criterion": "forward"},
  "+bn_reestimate": {**_PUBLISHED, "bn_batches": 8},
  "+distill": {**_PUBLISHED, "distill_weight": 0.5},
  "+original_target": {**_PUBLISHED, "target": "original"},
  "all": {
    **_PUBLISHED,
    "criterion": "forward_centred",
    "centred": True,
    "bn_batches": 8,
    "distill_weight": 0.5,
  },  # fmt: skip
}
ROWS["all+original_target"] = {**ROWS["all"], "target": "original"}


def command(
  budget: str, row: str, seed: int, workdir: str, quick: bool,
  no_finetune: bool = False,
):  # fmt: skip
  config = CONFIGS[budget] + (":runlocal" if quick else "")
  overrides = {**ROWS[row], "seed": seed}
  if no_finetune:
    overrides["num_epochs"] = 0.0
  if quick and budget == "oneshot":  # runlocal fine-tunes between groups
    overrides |= {"finetune_epochs": 0.0, "stage_end_epochs": 0.0}
  return [
    sys.executable, "-m", "train.prune", f"--config={config}",
    f"--workdir={workdir}",
    *(f"--config.{k}={v}" for k, v in overrides.items()),
  ]  # fmt: skip


def run_resumable(cmd: list[str], what: str) -> None:
  """Runs a resumable command (`train.prune`, `train.main`) from the
  repository root on 2 virtual CPU devices (unless XLA_FLAGS says
  otherwise); a failure stops the script with the command to resume."""
  env = dict(os.environ)
  env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  result = subprocess.run(cmd, cwd=ROOT, env=env)
  if result.returncode != 0:
    raise SystemExit(
      f"{what} failed (exit {result.returncode}); rerun the same command to "
      f"resume it: {' '.join(cmd)}"
    )


def _workdir(budget, row, seed, runs, no_finetune) -> pathlib.Path:
  kind = budget + ("-no-finetune" if no_finetune else "")
  return pathlib.Path(runs) / kind / row.lstrip("+") / f"seed{seed}"


def run_one(budget, row, seed, runs, quick, no_finetune=False) -> dict:
  """One (row, seed): runs train.prune unless its report exists."""
  workdir = _workdir(budget, row, seed, runs, no_finetune)
  report_path = workdir / "report.json"
  cmd = command(budget, row, seed, str(workdir), quick, no_finetune)
  pass_wall = 0.0
  if not no_finetune and budget == "oneshot":
    pass_wall = _reuse_pass(workdir, runs, row, seed)
  if not report_path.exists():
    start = time.time()
    run_resumable(cmd, f"{row} seed {seed}")
    print(f"{row} seed {seed}: {time.time() - start:.0f} s", flush=True)
  report = json.loads(report_path.read_text())
  return {
    "row": row, "seed": seed, "workdir": str(workdir),
    "command": " ".join(cmd[1:]),
    "baseline_accuracy": report["baseline"]["accuracy"],
    "before_finetune": report["pruned"]["accuracy_before_final_finetune"],
    "epochs": [h["accuracy"] for h in report.get("final_history", [])],
    "accuracy": report["pruned"]["accuracy"],
    "flops_reduction": report["flops_reduction"],
    "wall_s": report["wall_s"] + pass_wall,
  }  # fmt: skip


def _reuse_pass(workdir, runs, row, seed) -> float:
  """Starts a one-shot run from the finished pruning pass of its
  `--no-finetune` twin, if there is one: with no fine-tuning between groups
  the pass is the same computation (same row, seed and statistics), and
  `train.prune` resumes from the steps it finds. Returns the pass's wall
  time (0 if nothing was reused), to add to this run's."""
  twin = _workdir("oneshot", row, seed, runs, no_finetune=True)
  if not (twin / "report.json").exists():
    return 0.0
  copy_steps(twin, workdir)
  return json.loads((twin / "report.json").read_text())["wall_s"]


def copy_steps(source: pathlib.Path, workdir: pathlib.Path) -> None:
  """Gives `workdir` the finished steps of the run in `source` before its
  final fine-tune (the new head, the allocation, the group steps; each
  unless `workdir` has it already), so `train.prune` there resumes after
  them; each copied under another name first, so a kill leaves no half
  copy."""
  workdir.mkdir(parents=True, exist_ok=True)
  for name in ("head", "allocation", "steps"):
    if not (source / name).exists() or (workdir / name).exists():
      continue
    shutil.copytree(source / name, workdir / f"{name}.partial")
    (workdir / f"{name}.partial").rename(workdir / name)


def _mean_spread(values: list[float]) -> tuple[float, float]:
  spread = statistics.stdev(values) if len(values) > 1 else 0.0
  return statistics.fmean(values), spread


def summarise(runs: list[dict]) -> list[dict]:
  """Mean and spread over seeds, one entry per row, in `ROWS` order."""
  out = []
  for row in ROWS:
    mine = [r for r in runs if r["row"] == row]
    if not mine:
      continue
    n_epochs = min(len(r["epochs"]) for r in mine)
    entry = {"row": row, "seeds": [r["seed"] for r in mine]}
    entry["before_finetune"] = _mean_spread(
      [r["before_finetune"] for r in mine]
    )
    entry["epochs"] = [
      _mean_spread([r["epochs"][e] for r in mine]) for e in range(n_epochs)
    ]
    entry["accuracy"] = _mean_spread([r["accuracy"] for r in mine])
    entry["flops_reduction"] = statistics.fmean(
      r["flops_reduction"] for r in mine
    )
    entry["wall_min"] = statistics.fmean(r["wall_s"] for r in mine) / 60
    out.append(entry)
  return out


def markdown(summary: list[dict], baseline: float) -> str:
  def cell(ms):
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"

  n_epochs = max((len(s["epochs"]) for s in summary), default=0)
  # Every epoch of a short fine-tune; of a long one the first and middle.
  shown = list(range(n_epochs)) if n_epochs <= 3 else [0, n_epochs // 2 - 1]
  head = ["row", "seeds", "before FT"]
  head += [f"epoch {e + 1}" for e in shown]
  finetuned = n_epochs > 0  # Else "final" is "before FT" again.
  head += ["final"] * finetuned + ["FLOPs", "wall"]
  lines = [
    "| " + " | ".join(head) + " |",
    "|---|---:|" + "---:|" * (len(head) - 2),
  ]
  for s in summary:
    epochs = [
      cell(s["epochs"][e]) if e < len(s["epochs"]) else "" for e in shown
    ]
    cells = [s["row"], str(len(s["seeds"])), cell(s["before_finetune"])]
    cells += epochs
    cells += [cell(s["accuracy"])] * finetuned
    cells += [f"{s['flops_reduction']:.2f}x", f"{s['wall_min']:.1f} min"]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(
    f"Test accuracy in % (mean ± sample standard deviation over the seeds); "
    f"unpruned baseline {100 * baseline:.2f}%."
  )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--budget", choices=sorted(CONFIGS), default="oneshot")
  parser.add_argument("--rows", nargs="+", default=list(ROWS))
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--runs", default="runs/ablation")
  parser.add_argument("--out", default=None)
  parser.add_argument(
    "--no-finetune", action="store_true",
    help="stop before the final fine-tune (accuracy after pruning only)",
  )  # fmt: skip
  parser.add_argument(
    "--finished-only", action="store_true",
    help="tabulate the (row, seed) runs that have finished; run nothing",
  )  # fmt: skip
  parser.add_argument(
    "--quick", action="store_true", help="runlocal config, row all, 1 seed"
  )
  args = parser.parse_args()
  unknown = [r for r in args.rows if r not in ROWS]
  if unknown:
    raise SystemExit(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
  if args.quick:
    args.rows, args.seeds = ["all"], [0]
    if args.out is None:
      raise SystemExit("--quick needs --out (it must not replace results)")
    args.runs = str(pathlib.Path(args.out).with_suffix("")) + "_runs"
  from thinet_jax import report as report_lib

  start = time.time()
  pairs = [(row, seed) for row in args.rows for seed in args.seeds]
  if args.finished_only:
    pairs = [
      (row, seed) for row, seed in pairs
      if (
        _workdir(args.budget, row, seed, args.runs, args.no_finetune)
        / "report.json"
      ).exists()
    ]  # fmt: skip
    if not pairs:
      raise SystemExit(f"no finished runs under {args.runs}")
  runs = [
    run_one(args.budget, row, seed, args.runs, args.quick, args.no_finetune)
    for row, seed in pairs
  ]
  summary = summarise(runs)
  kind = args.budget + ("_no_finetune" if args.no_finetune else "")
  out = pathlib.Path(args.out or str(OUT).format(budget=kind))
  result = {
    "budget": args.budget,
    "config": CONFIGS[args.budget],
    "command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
    "machine": report_lib.machine(),
    "wall_s": time.time() - start,
    "runs": runs,
    "summary": summary,
  }
  out.write_text(json.dumps(result, indent=2) + "\n")
  table = markdown(summary, runs[0]["baseline_accuracy"])
  out.with_suffix(".md").write_text(table + "\n")
  print(table)


if __name__ == "__main__":
  main()
