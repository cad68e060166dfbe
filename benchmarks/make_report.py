"""BENCHMARKS.md from the committed benchmark JSON, with plots.

  python benchmarks/make_report.py            # BENCHMARKS.md, benchmarks/plots
  python benchmarks/make_report.py --check    # exit 1 if BENCHMARKS.md is stale

Runs nothing: every table is read from a JSON file in `benchmarks/` that a
benchmark script wrote, and under every table stands the command that
regenerates that file, the machine it ran on and its wall time. A JSON file
that is not there yet leaves its section saying so (and which command would
produce it), so the report never shows a number nobody measured.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import ablation
import criteria_table
import onnx_latency
import peer
import presets_table
import recipes
import selection

from thinet_jax import report as report_lib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "BENCHMARKS.md"
PLOTS = HERE / "plots"


def _load(name: str):
  path = HERE / name
  return json.loads(path.read_text()) if path.exists() else None


def machine_line(result: dict, devices: str | None = None) -> str:
  m = result["machine"]
  devices = devices or ", ".join(m.get("devices") or ["?"])
  return f"{m['cpu']}, {m['cores']} cores, JAX {m['jax']}, devices: {devices}"


def provenance(result: dict) -> str:
  """The lines under a table: command, machine, wall time."""
  return "  \n".join([
    f"Reproduce: `{result['command']}`",
    f"Machine: {machine_line(result)}.",
    f"Wall time of that command: {result['wall_s'] / 60:.1f} min.",
  ])  # fmt: skip


def runs_provenance(
  result: dict,
  runs: list[dict],
  command: str,
  reproduce_note: str = "",
  wall_note: str = "",
) -> str:
  """Under a table that one command collected from `train.prune` runs
  (subprocesses of an ablation or recipes script): the command that runs
  them, the machine, and the runs' summed wall time."""
  wall = sum(r["wall_s"] for r in runs) / 60
  devices = "2 virtual CPU devices per run (the script's default XLA_FLAGS)"
  return "  \n".join([
    f"Reproduce: `{command}`{reproduce_note}",
    f"Machine: {machine_line(result, devices)}.",
    f"Wall time of the {len(runs)} runs: {wall:.0f} min in all{wall_note}.",
  ])  # fmt: skip


def ablation_provenance(result: dict) -> str:
  return runs_provenance(result, result["runs"], _ablation_command(result))


def _missing(command: str) -> str:
  return f"Not measured yet; `{command}` writes it."


def _section(title, name, command, body, after=None) -> str:
  """`## title`, then `body(result)` (lines) and the provenance of the JSON
  file `name`, then `after(result)` (lines, e.g. a plot); or, while the
  file is missing, which `command` writes it."""
  result = _load(name)
  out = [f"## {title}", ""]
  if result is None:
    return "\n".join(out + [_missing(command)])
  out += body(result) + ["", provenance(result)]
  return "\n".join(out + (after(result) if after else []))


# --- Sections -------------------------------------------------------------


def section_ablation(plots: pathlib.Path | None) -> str:
  out = ["## Selection and reconstruction under identical budgets", ""]
  out.append(
    "`vgg16-fmnist` (93.59%), conv1_1 .. conv4_3 kept at half width (3.27x "
    "fewer FLOPs in every row). Rows: the plain criteria, ThiNet as "
    "published (greedy on the uncentred Gram matrix, uncentred least "
    "squares), each addition on its own, and the combinations; "
    "`benchmarks/ablation.py` documents every row."
  )
  for name, title, text in (
    ("ablation_oneshot_no_finetune.json", "Right after pruning",
     "One pass through all ten groups, no fine-tuning at all."),
    ("ablation_oneshot.json", "One pass, then 2 epochs",
     "The same pass, then exactly 2 epochs of fine-tuning (SGD momentum "
     "0.9, weight decay 5e-4, lr 0.01 cosine to 0, batch 128)."),
    ("ablation_procedure.json", "The paper's procedure, 12 epochs",
     "Layer by layer, 0.25 epoch of fine-tuning after each group (0.5 at a "
     "stage's end), then 12 epochs (`configs/fmnist_vgg16_thinet_long.py`); "
     "'before FT' is after the last group's short fine-tune. The thinet, "
     "weight_sum and random rows are the `train.prune` runs of the 12-epoch "
     "criteria table below (`--config "
     "configs/fmnist_vgg16_thinet_long.py:paper --config.criterion=...`, "
     "the same configuration field for field); the ablation read their "
     "reports instead of running them again, and they kept no per-epoch "
     "accuracies."),
  ):  # fmt: skip
    out += ["", f"### {title}", "", text, ""]
    result = _load(name)
    if result is None:
      budget = "procedure" if "procedure" in name else "oneshot"
      out.append(_missing(f"python benchmarks/ablation.py --budget {budget}"))
      continue
    baseline = result["runs"][0]["baseline_accuracy"]
    out += [ablation.markdown(result["summary"], baseline), ""]
    out.append(ablation_provenance(result))
    if name == "ablation_oneshot.json":
      png = _plot_ablation(result, plots)
      out += ["", f"![ablation]({png})"]
  return "\n".join(out)


def _ablation_command(result: dict) -> str:
  """The command that runs exactly the tabulated (row, seed) pairs: one
  `--rows` list per seed set."""
  by_seeds: dict[tuple, list[str]] = {}
  for s in result["summary"]:
    by_seeds.setdefault(tuple(s["seeds"]), []).append(s["row"])
  budget = result["budget"]
  flags = " --no-finetune" if "--no-finetune" in result["command"] else ""
  return "`; `".join(
    f"python benchmarks/ablation.py --budget {budget}{flags} --rows "
    f"{' '.join(rows)} --seeds {' '.join(map(str, seeds))}"
    for seeds, rows in by_seeds.items()
  )


def _plot_ablation(result: dict, plots: pathlib.Path | None) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  summary = result["summary"]
  names = [s["row"] for s in summary]
  fig, ax = plt.subplots(figsize=(7, 3.6))
  y = range(len(summary))
  before = [100 * s["before_finetune"][0] for s in summary]
  after = [100 * s["accuracy"][0] for s in summary]
  ax.barh(
    [i + 0.2 for i in y], before, 0.4, label="before fine-tuning",
    xerr=[100 * s["before_finetune"][1] for s in summary],
  )  # fmt: skip
  ax.barh(
    [i - 0.2 for i in y], after, 0.4, label="after 2 epochs",
    xerr=[100 * s["accuracy"][1] for s in summary],
  )  # fmt: skip
  baseline = 100 * result["runs"][0]["baseline_accuracy"]
  ax.axvline(baseline, color="k", lw=0.8, ls="--", label="unpruned")
  ax.set_yticks(list(y), names)
  ax.set_xlabel("test accuracy (%)")
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)
  fig.tight_layout()
  return _save(fig, plots, "ablation_oneshot.png")


def section_peer(plots: pathlib.Path | None) -> str:
  out = [
    "## Side by side with Torch-Pruning on the same weights", "",
    "One PyTorch model per architecture, trained by "
    "`benchmarks/torch_baseline.py` (`baselines/torch/`), pruned on both "
    "sides to the same FLOPs (conv1_1 .. conv4_3 of the VGG, branch2a and "
    "branch2b of every ResNet block, to half width): by Torch-Pruning 1.6 "
    "with its criteria (`tp:`), fine-tuned in PyTorch; and by this library "
    "(`thinet_jax`) after `interop.from_torchvision`, fine-tuned by "
    "`train.prune`. Every fine-tune reads the library's batches with the "
    "same seed, so both sides see the same images in the same order. "
    "Columns: fine-tune epochs after a one-shot prune (SGD momentum 0.9, "
    "weight decay 5e-4, lr 0.01 cosine to 0 over the budget, batch 128); "
    "`thinet_jax:procedure` spends the same total epochs layer by layer. "
    "`parity:l1` is Torch-Pruning's per-filter-L1 model fine-tuned by the "
    "library: the two fine-tunes on identical pruned weights. Test accuracy "
    "in %, mean ± sample standard deviation (seeds).", "",
  ]  # fmt: skip
  for key, model in peer.MODELS.items():
    out += [f"### {model.preset}", ""]
    result = _load(f"peer_{key}.json")
    command = f"python benchmarks/peer.py --model {key}"
    if result is None:
      out += [_missing(command), ""]
      continue
    cells = list(result["cells"].values())
    wall = sum(c["wall_s"] for c in cells) / 60
    m = result["machine"]
    out += [peer.markdown(result), ""]
    out.append("  \n".join([
      f"Reproduce: `{command}` (finished cells are read, not rerun).",
      f"Machine: {machine_line(result)}; torch {m['torch']}, "
      f"torch-pruning {m['torch_pruning']}.",
      f"Wall time of the {len(cells)} cells: {wall:.0f} min in all.",
    ]))  # fmt: skip
    png = _save(peer.figure(result, f"{model.preset}, equal FLOPs"), plots,
                f"peer_{key}.png")  # fmt: skip
    out += ["", f"![{model.preset} against Torch-Pruning]({png})", ""]
  return "\n".join(out).rstrip()


def section_procedure() -> str:
  out = ["## ThiNet-Conv on `vgg16-fmnist`: the criteria under one schedule"]
  for name, title in (
    ("criteria.json", "Main job's schedule (short fine-tunes)"),
    ("criteria_long.json", "The paper's final fine-tune length (12 epochs)"),
  ):
    rows = _load(name)
    out += ["", f"### {title}", ""]
    if rows is None:
      out.append(_missing(f"python benchmarks/criteria_table.py ... {name}"))
      continue
    command = "python benchmarks/criteria_table.py " + " ".join(
      r["workdir"] for r in rows
    ) + f" --out benchmarks/{name}"  # fmt: skip
    out += [criteria_table.markdown(rows), ""]
    out.append(
      f"Reproduce the table from the runs' reports: `{command}` (each "
      "workdir's `report.json` holds the `train.prune` config that made it; "
      "the README gives the commands)."
    )
  return "\n".join(out)


def section_selection(plots: pathlib.Path | None) -> str:
  def body(result):
    return [
      "The paper's comparison (its Figure 4): every group of ThiNet-Conv "
      "(conv1_1 .. conv4_3 of `vgg16-fmnist`) pruned *alone* to each keep "
      "ratio, the rest of the network untouched, test accuracy right after "
      "pruning (no fine-tuning), mean over the ten groups; random, weight "
      "sum and APoZ with least squares, ThiNet's greedy without "
      "(`thinet_no_ls`) and with it. Random: mean ± spread over seeds "
      f"{', '.join(map(str, result['seeds']))}. On the first "
      f"{result['eval_images']:,} test images (unpruned: "
      f"{100 * result['baseline_accuracy']:.2f}%).",
      "", selection.markdown(result), "",
      "Mean relative reconstruction error of the pruned group's consumer "
      "output, on the statistics' samples:",
      "", selection.markdown(result, "relative_error"),
    ]  # fmt: skip

  return _section(
    "Selection methods, one layer at a time", "selection.json",
    "python benchmarks/selection.py", body,
    lambda result: ["", f"![selection]({_plot_selection(result, plots)})"],
  )  # fmt: skip


def _plot_selection(result: dict, plots: pathlib.Path | None) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ratios = result["ratios"]
  names = list(result["layers"])
  fig, axes = plt.subplots(2, 6, figsize=(13, 4.6), sharey=True)
  axes = axes.ravel()
  for method, entry in result["summary"].items():
    mean = [100 * m for m, _ in entry["accuracy"]]
    spread = [100 * s for _, s in entry["accuracy"]]
    axes[0].errorbar(ratios, mean, yerr=spread, marker="o", ms=3, label=method)
    for ax, name in zip(axes[1:], names, strict=False):
      runs = result["layers"][name][method]
      acc = [
        100 * sum(r["accuracy"][k] for r in runs) / len(runs)
        for k in range(len(ratios))
      ]
      ax.plot(ratios, acc, marker="o", ms=2)
  axes[0].set_title("mean of the groups", fontsize=9)
  for ax, name in zip(axes[1:], names, strict=False):
    ax.set_title(name, fontsize=9)
  for ax in axes[len(names) + 1 :]:
    ax.axis("off")
  for ax in axes:
    ax.tick_params(labelsize=7)
  axes[0].set_ylabel("test accuracy (%)")
  axes[6].set_ylabel("test accuracy (%)")
  # The legend in the last panel, empty with ten groups.
  axes[-1].legend(*axes[0].get_legend_handles_labels(), loc="center",
                  fontsize=8)  # fmt: skip
  fig.supxlabel("keep ratio", fontsize=9)
  fig.tight_layout()
  return _save(fig, plots, "selection.png")


def section_selection_together(plots: pathlib.Path | None) -> str:
  def body(result):
    fractions = result["runs"]["thinet"][0]["flops_fraction"]
    return [
      "All ten groups of ThiNet-Conv pruned at once to each keep ratio "
      "(statistics of the unpruned model), accuracy right after pruning "
      f"and after a fixed short fine-tune: {result['finetune_steps']} SGD "
      f"steps of 128 images at the constant learning rate "
      f"{result['finetune_lr']:g} (momentum 0.9, weight decay 5e-4), each "
      "variant as the real smaller model, at keep "
      f"{', '.join(map(str, result['finetune_ratios']))}. Random: mean ± "
      f"spread over seeds {', '.join(map(str, result['seeds']))} (the seed "
      "picks its channels and the fine-tune's batches); the other methods: "
      f"seed{'s' * (len(result['other_seeds']) > 1)} "
      f"{', '.join(map(str, result['other_seeds']))} (their fine-tune's "
      "batches). FLOPs left: "
      + ", ".join(f"{100 * f:.0f}%" for f in fractions)
      + f". On the first {result['eval_images']:,} test images (unpruned: "
      f"{100 * result['baseline_accuracy']:.2f}%).",
      "", "Right after pruning:", "", selection.markdown(result), "",
      f"After {result['finetune_steps']} fine-tuning steps:", "",
      selection.markdown(result, "accuracy_finetuned"),
    ]  # fmt: skip

  return _section(
    "Selection methods, all groups together", "selection_together.json",
    "python benchmarks/selection.py --together", body,
    lambda result: [
      "", f"![selection together]({_plot_together(result, plots)})"
    ],
  )  # fmt: skip


def _plot_together(result: dict, plots: pathlib.Path | None) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
  titles = ("right after pruning", f"after {result['finetune_steps']} steps")
  keys = ("accuracy", "accuracy_finetuned")
  ratios = (result["ratios"], result["finetune_ratios"])
  for ax, key, x, title in zip(axes, keys, ratios, titles, strict=True):
    for method, entry in result["summary"].items():
      ax.errorbar(
        x, [100 * m for m, _ in entry[key]],
        yerr=[100 * d for _, d in entry[key]], marker="o", ms=3,
        label=method,
      )  # fmt: skip
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("keep ratio (every group)")
  axes[0].set_ylabel("test accuracy (%)")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, plots, "selection_together.png")


def section_recipes() -> str:
  out = ["## The paper's recipes on the CPU-sized models", ""]
  result = _load("recipes.json")
  if result is None:
    return "\n".join(out + [_missing("python benchmarks/recipes.py")])
  rows = result["rows"]
  out.append(
    "ThiNet as published (`:paper`) and the same schedule with weight-sum "
    "selection (also with least squares): 0.1 epoch of fine-tuning after "
    "each group, 0.2 after the last group of a stage, then a 1-epoch final "
    "fine-tune (the main job's schedule, shorter than the paper's). "
    "ThiNet-Conv: conv1_1 .. conv4_3 at half width; ThiNet-GAP: the same "
    "after the fc head became global average pooling and one dense layer "
    "fitted by least squares to the old logits (0.2 epoch fine-tune); "
    "ThiNet-Tiny: every conv at a quarter width (conv5_3 half) with the GAP "
    "head; ThiNet-70/50/30: branch2a and branch2b of every `resnet-fmnist` "
    "block at 0.7/0.5/0.3. `benchmarks/recipes.py` documents the rows."
  )
  out += ["", recipes.markdown(rows), ""]
  if any("latency" in r for r in rows):
    out += [
      "Measured speed-up of each pruned model over its baseline on this "
      "CPU (jitted forward at batch 1, 32, 128 and a training step at 128, "
      "medians after compilation; `--latency`), beside its FLOPs reduction:",
      "", recipes.latency_markdown(rows), "",
    ]  # fmt: skip
  by_criteria: dict[tuple, list[str]] = {}
  keys = {label: key for key, (label, _, _) in recipes.RECIPES.items()}
  for recipe in dict.fromkeys(r["recipe"] for r in rows):
    done = tuple(r["criterion"] for r in rows if r["recipe"] == recipe)
    by_criteria.setdefault(done, []).append(keys[recipe])
  latency = " --latency" if "--latency" in result["command"] else ""
  command = "`; `".join(
    f"python benchmarks/recipes.py --rows {' '.join(names)} --criteria "
    f"{' '.join(criteria)}{latency}"
    for criteria, names in by_criteria.items()
  )
  out.append(
    runs_provenance(
      result, rows, command,
      " (each row's `train.prune` command is in `benchmarks/recipes.json`)",
      " (other runs shared the 2 cores)",
    )
  )  # fmt: skip
  return "\n".join(out)


def section_sweep_criteria() -> str:
  out = ["## The criteria at every compression, all groups at once", ""]
  result = _load("results/fmnist_vgg16_sweep/sweep.json")
  command = (
    "python -m train.sweep --config configs/fmnist_vgg16_sweep.py "
    "--workdir runs/sweep"
  )
  if result is None:
    return "\n".join(out + [_missing(command)])
  out.append(
    "`vgg16-fmnist`: statistics of conv1_1 .. conv4_3 once, then per "
    "criterion all ten groups pruned at once to each keep ratio (least "
    "squares on), test accuracy **before any fine-tuning**. "
    "`thinet-allocated`: per-group counts for the same "
    "FLOPs from the error curves (`depgraph.allocation`)."
  )
  out += ["", report_lib.sweep_table(result), ""]
  devices = len(result["devices"])
  out.append(
    f"Reproduce: `{command}` (then copy `runs/sweep/sweep.json` to "
    "`benchmarks/results/fmnist_vgg16_sweep/`).  \n"
    f"Wall time: {result['wall_s'] / 60:.1f} min on {devices} virtual CPU "
    "devices."
  )
  return "\n".join(out)


def section_presets() -> str:
  rows = _load("presets.json")
  out = ["## Presets: parameters and FLOPs", ""]
  if rows is None:
    return "\n".join(out + [_missing("python benchmarks/presets_table.py")])
  out += [presets_table.markdown(rows), ""]
  out.append("Reproduce: `python benchmarks/presets_table.py --write`")
  return "\n".join(out)


def section_stats_speed() -> str:
  def body(result):
    out = [
      "`depgraph.collect` of one group per stage of `vgg16-fmnist` (the "
      "jitted traced program up to the consumer, the Gram matrix of its "
      "input's contributions "
      "with the sums and zero counts beside it, float64 sums on the host) "
      f"per {result['batch_size']}-image batch, against one jitted forward "
      "pass of the whole network on the same batch "
      f"({1e3 * result['forward_per_batch_s']:.1f} ms; "
      f"{result['devices']} devices). Steady cost: (time of "
      f"{result['batches']} batches - time of {result['batches'] // 2}) / "
      f"{result['batches'] // 2}; the first call ({result['batches'] // 2} "
      "batches) includes compiling.",
      "", "| group | mode | per batch | x forward pass | first call |",
      "|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for r in result["rows"]:
      out.append(
        f"| {r['group']} | {r['mode']} | {1e3 * r['per_batch_s']:.1f} ms | "
        f"{r['ratio']:.2f} | {r['first_call_s']:.1f} s |"
      )
    return out

  return _section(
    "Statistics collection against a forward pass", "stats_speed.json",
    "python benchmarks/stats_speed.py", body,
  )  # fmt: skip


def section_depgraph() -> str:
  def body(result):
    out = [
      "Tracing a model and finding its prunable channel groups, batch 1 at "
      "full size: `depgraph.trace_linen` on the Flax presets and on a "
      "flax-examples-style ResNet-50 written outside the library (trace: "
      "`jax.make_jaxpr` of `Module.apply` and flattening, a fresh closure "
      "each time so nothing is cached; discovery: the rules and the solve), "
      "against Torch-Pruning's `DependencyGraph().build_dependency` + "
      "`get_all_groups()` on the torchvision layouts of the same models. "
      "Torch-Pruning also counts the classifier's group, which the graph "
      "leaves out (it reaches the output). Best and median of the repeats; "
      "trace and discovery are each the best of their own repeats.",
      "", "| model | groups | best | trace | discovery | median |",
      "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in result["rows"]:
      trace = r.get("trace_best_s")
      parts = (
        f"{1e3 * trace:.0f} ms | {1e3 * r['discovery_best_s']:.0f} ms"
        if trace is not None else "| "
      )  # fmt: skip
      out.append(
        f"| {r['model']} ({r['size']}px) | {r['groups']} | "
        f"{1e3 * r['best_s']:.0f} ms | {parts} | "
        f"{1e3 * r['median_s']:.0f} ms |"
      )
    tp = [r for r in result["rows"] if "torch_pruning" in r]
    if tp:
      out += ["", f"Torch-Pruning {tp[0]['torch_pruning']}, "
              f"PyTorch {tp[0]['torch']}."]  # fmt: skip
    return out

  return _section(
    "Dependency graph: tracing and group discovery", "depgraph_speed.json",
    "python benchmarks/depgraph_speed.py", body,
  )  # fmt: skip


def section_depgraph_zoo() -> str:
  def body(result):
    out = [
      "Models written outside the library (tests/zoo.py), each group pruned "
      "at keep 0.5 on its own. zeroed: max deviation of the pruned logits "
      "from the original's with the removed channels zeroed at every "
      "consumer (least squares off), relative to max(1, max |logit|); "
      "error: max |measured - predicted| relative reconstruction error of a "
      "consumer (least squares on); export: every group pruned, "
      "`jax.export` against the eager pruned model.",
      "", "| model | groups (width) | left out | zeroed | error | export |",
      "|---|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for r in result["rows"]:
      groups = ", ".join(f"{k} ({w})" for k, w in r["groups"].items())
      left = "; ".join(r["left_out"])
      out.append(
        f"| {r['model']} | {groups} | {left} | {r['zeroed_dev']:.0e} | "
        f"{r['error_dev']:.0e} | {r['export_dev']:.0e} |"
      )
    return out

  return _section(
    "Dependency graph: the model zoo", "depgraph_zoo.json",
    "python benchmarks/depgraph_zoo.py", body,
  )  # fmt: skip


def section_greedy(plots: pathlib.Path | None) -> str:
  def body(result):
    out = [
      "ThiNet's greedy selection and least-squares rescaling at keep 0.5 "
      "from the Gram matrix (`select.greedy_order` + "
      "`reconstruct.ridge_scales`) against the official code's NumPy loop "
      "over candidates, on the same samples; the kept sets agree.",
      "",
      "| C | samples | official loop | Gram matmul | select + fit | ours "
      "total | speed-up | select / Gram | same kept set |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for r in result["rows"]:
      same = "yes" if r["same_kept_set"] else "NO"
      out.append(
        f"| {r['channels']} | {r['samples']:,} | {r['official_s']:.3f} s | "
        f"{1e3 * r['gram_s']:.1f} ms | "
        f"{1e3 * r['select_and_fit_s']:.2f} ms | "
        f"{1e3 * r['ours_total_s']:.1f} ms | {r['speedup']:.0f}x | "
        f"{r['select_over_gram']:.2f} | {same} |"
      )
    return out

  return _section(
    "Selection speed against the official algorithm", "greedy_speed.json",
    "python benchmarks/greedy_speed.py", body,
    lambda result: ["", f"![greedy]({_plot_greedy(result, plots)})"],
  )  # fmt: skip


def _plot_greedy(result: dict, plots: pathlib.Path | None) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = result["rows"]
  c = [r["channels"] for r in rows]
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for key, label in (
    ("official_s", "official loop"), ("ours_total_s", "ours (Gram + select)"),
    ("gram_s", "Gram matmul alone"),
  ):  # fmt: skip
    ax.loglog(c, [r[key] for r in rows], "o-", label=label)
  ax.set_xlabel("channels C")
  ax.set_ylabel("seconds")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, plots, "greedy_speed.png")


def section_latency() -> str:
  def body(result):
    s = result["summary"]
    o, p = result["models"]["original"], result["models"]["pruned"]
    out = [
      f"FLOPs reduction {s['flops_reduction']:.2f}x. Median of many jitted "
      "calls after compilation, on this CPU.",
      "", "| measure | original | pruned | speed-up | of FLOPs reduction |",
      "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    batches = sorted(
      int(k.removeprefix("infer_b").removesuffix("_speedup"))
      for k in s if k.startswith("infer_b") and k.endswith("_speedup")
    )  # fmt: skip
    for b in batches:
      key = f"infer_b{b}_s"
      out.append(
        f"| inference, batch {b} | {1e3 * o[key]:.2f} ms | "
        f"{1e3 * p[key]:.2f} ms | {s[f'infer_b{b}_speedup']:.2f}x | "
        f"{100 * s[f'infer_b{b}_speedup_over_flops_reduction']:.0f}% |"
      )
    b = max(batches)
    key = f"train_step_b{b}_s"
    if key in o:
      speedup = s[f"train_b{b}_speedup"]
      out.append(
        f"| training step, batch {b} | {1e3 * o[key]:.0f} ms | "
        f"{1e3 * p[key]:.0f} ms | {speedup:.2f}x | "
        f"{100 * speedup / s['flops_reduction']:.0f}% |"
      )
    return out

  return _section(
    "Measured speed-up of the pruned model", "latency.json",
    "python benchmarks/latency.py ...", body,
  )  # fmt: skip


def section_sweep() -> str:
  def body(result):
    k, n = result["variants"], result["images"]
    out = [
      f"{k} keep ratios ({', '.join(map(str, result['ratios']))}) of "
      f"ThiNet-Conv's groups, evaluated on {n} images (seconds, after "
      "compilation; `benchmarks/sweep_speed.py` defines each way).",
      "", "| way | seconds | loop of masked models / this |",
      "|---|---:|---:|",
    ]  # fmt: skip
    loop = result["loop_masked_s"]
    for key, label in (
      ("shared_s", "shared kernels, one vmapped call"),
      ("vmapped_s", "stacked variants, one vmapped call"),
      ("one_variant_s", "one variant"),
      ("loop_masked_s", f"loop of {k} masked variants"),
      ("loop_materialised_s", f"loop of {k} real smaller models"),
    ):  # fmt: skip
      out.append(f"| {label} | {result[key]:.2f} | {loop / result[key]:.2f} |")
    out.append(
      f"| (compiling the {k} smaller models) | "
      f"{result['loop_materialised_compile_s']:.2f} | |"
    )
    return out

  return _section(
    "A K-ratio sweep in one vmapped call", "sweep_speed.json",
    "python benchmarks/sweep_speed.py", body,
  )  # fmt: skip


def section_onnx() -> str:
  def body(result):
    return [
      "Each model exported by `thinet_jax.onnx_export.to_onnx` and run by "
      f"onnxruntime {result['onnxruntime']} (CPU execution provider, its "
      "default threads): median call time after warm-up; the pruned row's "
      "speed-up over the original in brackets; the largest difference from "
      "the JAX logits over the largest logit, on 8 random images.",
      "", onnx_latency.markdown(result),
    ]  # fmt: skip

  return _section(
    "ONNX export: onnxruntime on this CPU", "onnx_latency.json",
    "python benchmarks/onnx_latency.py --pair ...", body,
  )  # fmt: skip


def section_devices() -> str:
  def body(result):
    out = [
      "| devices | batch | train step | train img/s | speed-up "
      "| eval img/s | speed-up |",
      "|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in result["rows"]:
      out.append(
        f"| {r['devices']} | {r['batch']} | {1e3 * r['train_step_s']:.0f} ms "
        f"| {r['train_images_per_s']:.0f} | {r['train_speedup']:.2f}x | "
        f"{r['eval_images_per_s']:.0f} | {r['eval_speedup']:.2f}x |"
      )
    return out

  return _section(
    "Data parallelism over virtual CPU devices", "devices_speed.json",
    "python benchmarks/devices_speed.py", body,
  )  # fmt: skip


def _save(fig, plots: pathlib.Path | None, name: str) -> str:
  """Saves a figure under `plots` (None: only names it, for --check)."""
  import matplotlib.pyplot as plt

  if plots is not None:
    plots.mkdir(parents=True, exist_ok=True)
    fig.savefig(plots / name, dpi=110, metadata={"Software": None})
  plt.close(fig)
  return f"benchmarks/plots/{name}"


def render(plots: pathlib.Path | None = PLOTS) -> str:
  header = (
    "# thinet_jax benchmarks\n\n"
    "Generated by `python benchmarks/make_report.py` from the JSON files in "
    "`benchmarks/`; do not edit by hand. Every number below comes from the "
    "command under its table, on the machine named there (a 2-core CPU "
    "unless it says otherwise; other work shared the machine during some "
    "runs, so wall times are upper bounds)."
  )
  sections = [
    header,
    section_ablation(plots),
    section_peer(plots),
    section_selection(plots),
    section_selection_together(plots),
    section_sweep_criteria(),
    section_recipes(),
    section_procedure(),
    section_stats_speed(),
    section_depgraph(),
    section_depgraph_zoo(),
    section_greedy(plots),
    section_latency(),
    section_onnx(),
    section_sweep(),
    section_devices(),
    section_presets(),
  ]
  return "\n\n".join(sections) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(OUT))
  parser.add_argument("--plots", default=str(PLOTS))
  parser.add_argument(
    "--check", action="store_true",
    help="exit 1 if --out differs from what the JSON gives; write nothing",
  )  # fmt: skip
  args = parser.parse_args()
  text = render(None if args.check else pathlib.Path(args.plots))
  out = pathlib.Path(args.out)
  if args.check:
    if not out.exists() or out.read_text() != text:
      print(f"{out} is stale: run python benchmarks/make_report.py")
      sys.exit(1)
    return
  out.write_text(text)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
