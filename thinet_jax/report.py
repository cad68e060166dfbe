"""Reports of a pruning procedure: JSON, Markdown and PNG plots."""

from __future__ import annotations

import json
import os
from typing import Any

from thinet_jax import groups, profile
from thinet_jax.spec import ModelSpec


def machine() -> dict[str, Any]:
  """CPU, cores, JAX version and devices: the machine line of a report."""
  import platform

  import jax

  cpu = platform.processor() or platform.machine()
  try:  # Linux names the model; platform.processor() often does not.
    with open("/proc/cpuinfo") as f:
      names = [ln.split(":", 1)[1].strip() for ln in f if "model name" in ln]
    cpu = f"{names[0]} ({cpu})" if names else cpu
  except OSError:
    pass
  return {
    "cpu": cpu,
    "cores": os.cpu_count(),
    "jax": jax.__version__,
    "devices": [str(d) for d in jax.devices()],
  }


def write_benchmark(
  path: str, command: str, seconds: float, **fields: Any
) -> None:
  """A benchmark's JSON: the machine, the command that ran, its wall time,
  then `fields` (e.g. rows); prints where it went."""
  result = dict(machine=machine(), command=command, wall_s=seconds, **fields)
  with open(path, "w") as f:
    f.write(json.dumps(result, indent=2) + "\n")
  print(f"wrote {path}")


def procedure_report(
  base_spec: Any,
  spec: Any,
  image_size: int,
  baseline: dict[str, float],
  records: list[dict[str, Any]],
  before_final: dict[str, float],
  final: dict[str, float],
  config: dict[str, Any],
  wall_s: float,
  devices: list[Any],
) -> dict[str, Any]:
  """Everything `train.prune` measured, JSON-ready (presets' specs or
  any models' `nets.Net`)."""
  if isinstance(spec, ModelSpec):
    base = profile.count(base_spec, image_size)
    now = profile.count(spec, image_size)
    widths = [
      {
        "group": g.name,
        "original": g.width,
        "kept": groups.get(spec, g.name).width,
      }
      for g in groups.groups(base_spec)
    ]
    described = base_spec.to_dict(), spec.to_dict()
  else:
    from thinet_jax import factories

    base = factories.count(base_spec, image_size)
    now = factories.count(spec, image_size)
    widths = factories.widths(base_spec, spec)
    described = base_spec.meta, spec.meta
  return {
    "baseline": {
      "accuracy": baseline["accuracy"],
      "params": base["params"],
      "flops": base["flops"],
      "spec": described[0],
    },
    "pruned": {
      "accuracy_before_final_finetune": before_final["accuracy"],
      "accuracy": final["accuracy"],
      "params": now["params"],
      "flops": now["flops"],
      "spec": described[1],
    },
    "flops_reduction": base["flops"] / now["flops"],
    "params_reduction": base["params"] / now["params"],
    "accuracy_change": final["accuracy"] - baseline["accuracy"],
    "steps": [
      {k: v for k, v in r.items() if k not in ("kept", "scales")}
      for r in records
    ],
    "kept": {r["group"]: r["kept"] for r in records},
    "widths": widths,
    "config": config,
    "wall_s": wall_s,
    "devices": [str(d) for d in devices],
  }


def markdown_table(report: dict[str, Any]) -> str:
  """Per-group table and totals."""
  lines = [
    "| group | width | params | FLOPs | rel. error | acc. pruned | "
    "acc. fine-tuned |",
    "|---|---|---:|---:|---:|---:|---:|",
  ]
  b = report["baseline"]
  lines.append(
    f"| (baseline) | | {b['params']:,} | {profile.human(b['flops'])} | | | "
    f"{b['accuracy']:.4f} |"
  )
  if "head" in report:  # ThiNet-GAP / Tiny: the head surgery came first.
    h = report["head"]
    lines.append(
      f"| ({h['head']} head) | | {h['params']:,} | "
      f"{profile.human(h['flops'])} | {h['relative_error']:.4f} | "
      f"{h['accuracy_least_squares']:.4f} | {h['accuracy']:.4f} |"
    )
  for s in report["steps"]:
    lines.append(
      f"| {s['group']} | {s['width_before']} -> {s['width_after']} | "
      f"{s['params_after']:,} | {profile.human(s['flops_after'])} | "
      f"{s['relative_error']:.4f} | {s['accuracy_pruned']:.4f} | "
      f"{_accuracy(s.get('accuracy_finetuned'))} |"
    )
  p = report["pruned"]
  lines.append(
    f"| (final fine-tune) | | {p['params']:,} | {profile.human(p['flops'])} "
    f"| | {p['accuracy_before_final_finetune']:.4f} | {p['accuracy']:.4f} |"
  )
  lines.append("")
  lines.append(
    f"FLOPs {report['flops_reduction']:.2f}x fewer, params "
    f"{report['params_reduction']:.2f}x fewer; top-1 accuracy "
    f"{b['accuracy']:.4f} -> {p['accuracy']:.4f} "
    f"({100 * report['accuracy_change']:+.2f} points); {wall_time(report)}."
  )
  return "\n".join(lines)


def _accuracy(value: float | None) -> str:
  """A table cell: the accuracy, or empty where there is none (a group
  without its own fine-tune)."""
  return "" if value is None else f"{value:.4f}"


def wall_time(report: dict[str, Any]) -> str:
  """'wall time 12.3 min' or, for a resumed run, the total over its
  invocations and the last one's."""
  wall = report.get("wall")
  if not wall or wall.get("invocations", 1) <= 1:
    return f"wall time {report['wall_s'] / 60:.1f} min"
  return (
    f"wall time {wall['total_s'] / 60:.1f} min over {wall['invocations']} "
    f"invocations (the last {wall['last_s'] / 60:.1f} min)"
  )


# Every config field that shaped the pruned model, as report.md lists them.
METHOD_FIELDS = (
  ("criterion", "selection criterion"),
  ("least_squares", "least-squares scales"),
  ("ridge", "ridge"),
  ("centred", "centred fit and mean shift"),
  ("target", "reconstruction target"),
  ("bn_batches", "BatchNorm re-estimation batches"),
  ("stats_mode", "statistics"),
  ("images_per_class", "statistics images per class"),
  ("samples_per_image", "samples per image"),
  ("keep_ratio", "keep ratio"),
  ("budget", "budget (0 = off)"),
  ("budget_metric", "budget metric"),
  ("head", "head surgery"),
  ("head_finetune_epochs", "head fine-tune epochs"),
  ("distill_weight", "distillation weight"),
  ("distill_temperature", "distillation temperature"),
  ("distill_features", "feature-map distillation weight"),
  ("finetune_epochs", "fine-tune epochs per group"),
  ("stage_end_epochs", "... after a stage's last group"),
  ("finetune_lr", "per-group fine-tune learning rate"),
  ("num_epochs", "final fine-tune epochs"),
  ("learning_rate", "final fine-tune peak learning rate"),
  ("schedule", "final fine-tune schedule"),
  ("warmup_epochs", "final fine-tune warm-up epochs"),
  ("lr_drop_epochs", "step schedule drops at"),
  ("batch_size", "batch size"),
  ("momentum", "momentum"),
  ("nesterov", "Nesterov"),
  ("weight_decay", "weight decay"),
  ("seed", "seed"),
)


def settings_table(config: dict[str, Any]) -> str:
  """The method's settings as a two-column Markdown table."""
  rows = ["| setting | value |", "|---|---|"]
  for field, label in METHOD_FIELDS:
    if field in config:
      rows.append(f"| {label} (`{field}`) | {config[field]!r} |")
  return "\n".join(rows)


def write(workdir: str, report: dict[str, Any]) -> None:
  """accuracy.png, widths.png, report.md, then report.json in `workdir`,
  each written atomically; report.json last, so its presence means the
  report is complete."""
  from thinet_jax import rundir

  _plots(workdir, report)
  config = report["config"]
  notes = "".join(f"\n- {n}" for n in report.get("notes", []))
  text = (
    f"# ThiNet procedure: {config.get('model')} on {config.get('dataset')}"
    "\n\n" + markdown_table(report) + "\n\n## Settings\n\n"
    + settings_table(config) + "\n" + (notes and "\nNotes:\n" + notes + "\n")
  )  # fmt: skip
  rundir.write_text(os.path.join(workdir, "report.md"), text)
  rundir.write_json(os.path.join(workdir, "report.json"), report)


def accuracy_figure(report: dict[str, Any]):
  """Accuracy along the procedure: right after each pruning (hollow) and
  after its fine-tune (filled), the baseline as a labelled line."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps = report["steps"]
  fig, ax = plt.subplots(figsize=(max(6, len(steps) * 0.7), 4))
  x = list(range(1, len(steps) + 1))
  path_x, path_y = [0], [report["baseline"]["accuracy"]]
  tuned = [(i, s["accuracy_finetuned"]) for i, s in enumerate(steps, 1)
           if s.get("accuracy_finetuned") is not None]  # fmt: skip
  for i, s in enumerate(steps, 1):
    path_x.append(i - 0.5)
    path_y.append(s["accuracy_pruned"])
    if s.get("accuracy_finetuned") is not None:
      path_x.append(i)
      path_y.append(s["accuracy_finetuned"])
  path_x.append(len(steps) + 1)
  path_y.append(report["pruned"]["accuracy"])
  ax.plot(path_x, path_y, color="tab:blue", lw=1, alpha=0.6)
  ax.plot(
    [i - 0.5 for i in x], [s["accuracy_pruned"] for s in steps], "o",
    mfc="white", color="tab:blue", label="right after pruning",
  )  # fmt: skip
  if tuned:
    ax.plot(
      [i for i, _ in tuned], [a for _, a in tuned], "o", color="tab:blue",
      label="after the group's fine-tune",
    )  # fmt: skip
  ax.plot(
    [len(steps) + 1], [report["pruned"]["accuracy"]], "*", ms=12,
    color="tab:green", label="after the final fine-tune",
  )  # fmt: skip
  ax.axhline(
    report["baseline"]["accuracy"], color="gray", ls="--", lw=0.8,
    label="unpruned baseline",
  )  # fmt: skip
  ax.set_xticks([0, *x, len(steps) + 1])
  ax.set_xticklabels(
    ["baseline", *[s["group"] for s in steps], "final"], rotation=45,
    ha="right",
  )  # fmt: skip
  ax.set_ylabel("top-1 accuracy")
  ax.set_title("accuracy along the procedure")
  ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  return fig


def _plots(workdir: str, report: dict[str, Any]) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig = accuracy_figure(report)
  _save(fig, os.path.join(workdir, "accuracy.png"))
  plt.close(fig)

  widths = report["widths"]
  fig, ax = plt.subplots(figsize=(max(6, len(widths) * 0.5), 4))
  idx = range(len(widths))
  ax.bar(
    idx, [w["original"] for w in widths], color="lightgray", label="original"
  )
  ax.bar(idx, [w["kept"] for w in widths], color="tab:blue", label="kept")
  ax.set_xticks(list(idx))
  ax.set_xticklabels([w["group"] for w in widths], rotation=45, ha="right")
  ax.set_ylabel("output channels")
  ax.legend()
  fig.tight_layout()
  _save(fig, os.path.join(workdir, "widths.png"))
  plt.close(fig)


def _save(fig, path: str) -> None:
  """Saves a figure through a temporary file and a rename."""
  tmp = f"{path}.tmp{os.getpid()}.png"
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)


# --- ratio sweeps -----------------------------------------------------------


def sweep_table(result: dict[str, Any]) -> str:
  """Accuracy (before fine-tuning) per criterion and keep ratio."""
  lines_ = result["lines"]
  first = next(iter(lines_.values()))
  tuned = "accuracy_finetuned" in first[0]
  head = "| line | " + " | ".join(
    f"{r['ratio']:.2f} ({100 * r['flops_fraction']:.0f}% FLOPs)" for r in first
  )
  out = [head + " |", "|---|" + "---:|" * len(first)]
  for label, rows in lines_.items():
    cells = []
    for r in rows:
      cell = f"{r['accuracy']:.4f}"
      if tuned:
        cell += f" / {r['accuracy_finetuned']:.4f}"
      cells.append(cell)
    out.append(f"| {label} | " + " | ".join(cells) + " |")
  out.append("")
  out.append(
    f"Baseline accuracy {result['baseline']['accuracy']:.4f}; cells: "
    "accuracy right after pruning"
    + (" / after the vmapped fine-tune" if tuned else "")
    + ". Columns: the mean kept fraction of the pruned groups (the allocated"
    " line keeps the same FLOPs with per-group counts)."
  )
  return "\n".join(out)


def write_sweep(workdir: str, result: dict[str, Any]) -> None:
  """sweep.json, sweep.md and sweep.png in `workdir`."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    json.dump(result, f, indent=2)
  config = result.get("config", {})
  with open(os.path.join(workdir, "sweep.md"), "w") as f:
    f.write(
      f"# Ratio sweep: {config.get('model')} on {config.get('dataset')}\n\n"
      + sweep_table(result)
      + "\n"
    )
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, rows in result["lines"].items():
    ax.plot(
      [100 * r["flops_fraction"] for r in rows],
      [r["accuracy"] for r in rows],
      marker="o",
      label=label,
    )
  ax.axhline(
    result["baseline"]["accuracy"], color="gray", ls="--", lw=0.8,
    label="unpruned",
  )  # fmt: skip
  ax.set_xlabel("FLOPs kept (% of the original)")
  ax.set_ylabel("top-1 accuracy before fine-tuning")
  ax.set_title("selection criteria, all groups pruned at once")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "sweep.png"), dpi=100)
  plt.close(fig)
