"""Collects `train.prune` reports into one table (criteria side by side).

  python benchmarks/criteria_table.py runs/prune runs/prune-weight_sum \\
      runs/prune-random                       # -> benchmarks/criteria.json

Each argument is a `train.prune` workdir; the runs are expected to share the
baseline and the schedule (only the criterion differs), as the commands in
README.md do. Prints a Markdown table and saves the numbers with the
commands that produced them.
"""

from __future__ import annotations

import argparse
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent / "criteria.json"


def row(workdir: pathlib.Path) -> dict:
  report = json.loads((workdir / "report.json").read_text())
  config = report["config"]
  steps = report["steps"]
  return {
    "workdir": str(workdir),
    "criterion": config["criterion"],
    "least_squares": config["least_squares"],
    "baseline_accuracy": report["baseline"]["accuracy"],
    "mean_relative_error": sum(s["relative_error"] for s in steps) / len(steps),
    "accuracy_after_procedure": report["pruned"][
      "accuracy_before_final_finetune"
    ],
    "accuracy": report["pruned"]["accuracy"],
    "accuracy_change": report["accuracy_change"],
    "flops_reduction": report["flops_reduction"],
    "params_reduction": report["params_reduction"],
    "wall_min": report["wall_s"] / 60,
  }


def markdown(rows: list[dict]) -> str:
  lines = [
    "| criterion | LS | mean rel. error | acc. before final FT | final acc. "
    "| change | FLOPs | wall |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(
      f"| {r['criterion']} | {'yes' if r['least_squares'] else 'no'} | "
      f"{r['mean_relative_error']:.4f} | {r['accuracy_after_procedure']:.4f} "
      f"| {r['accuracy']:.4f} | {100 * r['accuracy_change']:+.2f} | "
      f"{r['flops_reduction']:.2f}x | {r['wall_min']:.1f} min |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", type=pathlib.Path)
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args()
  rows = [row(w) for w in args.workdirs]
  pathlib.Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
  print(markdown(rows))


if __name__ == "__main__":
  main()
