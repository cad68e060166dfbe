"""Side by side with Torch-Pruning, on the same weights, data and FLOPs.

  python benchmarks/peer.py --model vgg       # every cell, 3 seeds (hours)
  python benchmarks/peer.py --model resnet
  python benchmarks/peer.py --model vgg --methods tp:group_l1 thinet_jax \\
      --seeds 0 --budgets 0 2                 # a subset
  python benchmarks/peer.py --model vgg --methods 'thinet_jax+lr=0.003' \\
      --set 'thinet_jax+lr=0.003:learning_rate=0.003'   # an ad-hoc variant
  python benchmarks/peer.py --report          # the table only
  python benchmarks/peer.py --quick --out /tmp/p   # a minute (tests)

Both sides start from one PyTorch model, trained by
`benchmarks/torch_baseline.py` (shipped in `baselines/torch/`; trained
first if missing). Torch-Pruning 1.6 prunes it with its criteria and
PyTorch fine-tunes it (`torch_side`); the library imports the same state
dict (`interop.from_torchvision`), prunes it with its methods and
fine-tunes it (`train.prune` runs). The same layers lose the same number of
channels (conv1_1 .. conv4_3 of the VGG, branch2a/2b of every ResNet
block, to half), so FLOPs are equal; every fine-tune reads the library's
batches with the same data seed (`torch_side.batches`), so both sides see
the same images in the same order with the same augmentation.

A cell is (model, method, seed, budget): the test accuracy after `budget`
epochs of fine-tuning (0 = right after pruning) under the one-shot recipe
(configs/fmnist_vgg16_oneshot.py: SGD momentum 0.9, weight decay 5e-4,
lr 0.01 cosine to 0 over the budget, batch 128). Methods (`METHODS`):

* `tp:<criterion>`: Torch-Pruning's `MetaPruner` with a criterion of
  `torch_side.CRITERIA`, no reconstruction, fine-tuned in PyTorch.
* `thinet_jax`: the library's default method, one shot (`train.prune`).
* `thinet_jax:paper`: ThiNet as published, one shot.
* `thinet_jax:procedure`: the layer-by-layer procedure (a short fine-tune
  after every group), its total epochs equal to the budget.
* `parity:l1`: Torch-Pruning's per-filter-L1 model, fine-tuned by the
  library (`train.main`): the fine-tune compared with PyTorch's
  `tp:l1` on identical pruned weights and batches.

`name+k=v` is a method with config overrides (`+decay=kernels` on a `tp:`
or `parity:` method sets the weight-decay mask of PyTorch's optimizer;
other keys are `train.prune` / `train.main` config fields); `--set` names
a variant's overrides explicitly. Finished cells are stored in
`benchmarks/peer_<model>.json` as they finish (committed, so a stopped run
continues in a later session); a cell found there is not rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HERE = ROOT / "benchmarks"
BUDGETS = (0.0, 0.1, 0.5, 2.0)
# The fine-tune of the Torch-Pruning models and of `parity:` (the one-shot
# budget of configs/fmnist_vgg16_oneshot.py, pinned here so a change of the
# library's defaults does not move the peer's): lr 0.01 cosine to 0 over
# the budget, SGD momentum 0.9, weight decay 5e-4, batch 128, crop pad 4.
PROTOCOL = {
  "learning_rate": 0.01, "schedule": "cosine", "warmup_epochs": 0.0,
  "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
  "batch_size": 128, "crop_pad": 4,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Model:
  preset: str
  oneshot: str  # train.prune config of the one-shot budget.
  procedure: str  # train.prune config of the layer-by-layer procedure.

  def torch_path(self, ours: str) -> str:
    """The torch module path of one of our conv layers."""
    if self.preset == "vgg16-fmnist":
      from thinet_jax import presets

      names = presets.get(self.preset).vgg_conv_names()
      return f"features.{_vgg_feature_index(self.preset, names.index(ours))}"
    block, branch = ours.split("/")
    return _resnet_block_path(self.preset, block) + {
      "branch2a": ".conv1", "branch2b": ".conv2", "branch2c": ".conv3",
    }[branch]  # fmt: skip


MODELS = {
  "vgg": Model(
    "vgg16-fmnist", "configs/fmnist_vgg16_oneshot.py",
    "configs/fmnist_vgg16_thinet.py",
  ),
  "resnet": Model(
    "resnet-fmnist", "configs/fmnist_resnet_oneshot.py",
    "configs/fmnist_resnet_thinet.py",
  ),
}  # fmt: skip


def _vgg_feature_index(preset: str, conv: int) -> int:
  from thinet_jax import presets

  index = seen = 0
  for item in presets.get(preset).layers:
    if item == "M":
      index += 1
      continue
    if seen == conv:
      return index
    seen += 1
    index += 3  # Conv2d, BatchNorm2d, ReLU.
  raise ValueError(f"{preset} has no conv {conv}")


def _resnet_block_path(preset: str, block: str) -> str:
  from thinet_jax import presets

  spec = presets.get(preset)
  names = spec.resnet_block_names()
  i = names.index(block)
  for stage, n in enumerate(spec.stage_sizes):
    if i < n:
      return f"layer{stage + 1}.{i}"
    i -= n
  raise ValueError(block)


def methods() -> list[str]:
  from benchmarks import torch_side

  return [
    *(f"tp:{c}" for c in torch_side.CRITERIA),
    "thinet_jax", "thinet_jax:paper", "thinet_jax:procedure", "parity:l1",
  ]  # fmt: skip


def parse_method(method: str, extra: dict[str, dict]) -> tuple[str, dict]:
  """'tp:l1+decay=kernels' -> ('tp:l1', {'decay': 'kernels'})."""
  base, *pairs = method.split("+")
  overrides = dict(extra.get(method, {}))
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep and method not in extra:
      raise SystemExit(
        f"{method!r}: write overrides as name+key=value, or give them with "
        "--set"
      )
    if sep:
      overrides[key] = value
  if base not in methods():
    raise SystemExit(f"unknown method {base!r}; methods: {methods()}")
  return base, overrides


# --- where the results go -------------------------------------------------


def results_path(model: str, out: str | None) -> pathlib.Path:
  if out:
    return pathlib.Path(f"{out}_{model}.json")
  return HERE / f"peer_{model}.json"


def load(path: pathlib.Path) -> dict:
  if path.exists():
    return json.loads(path.read_text())
  return {"cells": {}}


def store(path: pathlib.Path, result: dict) -> None:
  tmp = path.with_suffix(".json.partial")
  tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path)


def cell_key(method: str, seed: int, budget: float) -> str:
  return f"{method}|seed{seed}|{budget:g}"


# --- the cells --------------------------------------------------------------


@dataclasses.dataclass
class Context:
  key: str  # "vgg" / "resnet"
  model: Model
  runs: pathlib.Path
  quick: bool
  baseline_dir: pathlib.Path  # torch baselines.

  def config(self, path: str, **overrides):
    """The config file's `get_config()` (runlocal when quick), overridden."""
    import ast
    import importlib.util

    spec = importlib.util.spec_from_file_location("c", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal" if self.quick else None)
    if self.quick:  # runlocal fine-tunes between groups; one shot here.
      config.finetune_epochs = config.stage_end_epochs = 0.0
    for k, v in overrides.items():
      if isinstance(v, str):
        try:
          v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
          pass  # A plain string.
      config[k] = v
    return config

  def path(self, path: str, paper: bool = False) -> str:
    """A config path with its `:runlocal` (quick) and `:paper` switches;
    `:paper` there, not PAPER_METHOD's fields, so that a config's own
    non-paper fields (configs/fmnist_resnet_oneshot.py's fine-tune) stay
    out of it."""
    args = [a for a, on in (("runlocal", self.quick), ("paper", paper)) if on]
    return path + (":" + ",".join(args) if args else "")

  @functools.cached_property
  def groups(self) -> list[str]:
    """The groups the one-shot config prunes, in order."""
    from thinet_jax import groups, presets

    config = self.config(self.model.oneshot)
    if config.groups:
      return list(config.groups)
    return [g.name for g in groups.paper_groups(presets.get(self.model.preset))]


def torch_baseline(ctx: Context):
  """The trained PyTorch model (trained here first if it is missing; a
  fresh initialisation in --quick runs)."""
  import torch
  from safetensors.torch import load_file

  from benchmarks import torch_models

  torch.manual_seed(0)
  model = torch_models.fmnist(ctx.model.preset)
  if ctx.quick:
    return model.eval()
  path = ctx.baseline_dir / f"{ctx.model.preset}.safetensors"
  if not path.exists():
    subprocess.run(
      [sys.executable, str(HERE / "torch_baseline.py"), "--model",
       ctx.model.preset, "--out", str(ctx.baseline_dir)],
      check=True, cwd=ROOT,
    )  # fmt: skip
  model.load_state_dict(load_file(str(path)))
  return model.eval()


def library_model(ctx: Context, torch_model, name: str) -> pathlib.Path:
  """A torch model's state dict as a library model directory."""
  from benchmarks import torch_side
  from thinet_jax import interop, train

  out = ctx.runs / ctx.key / "models" / name
  if (out / "done").exists():
    return out
  state = torch_side.numpy_state(torch_model)
  spec, variables = interop.from_torchvision(
    state, spec_of(ctx, torch_model), 32
  )
  if out.exists():
    shutil.rmtree(out)
  train.save_model(str(out), spec, variables, 32, extra={"source": name})
  (out / "done").write_text("")
  return out


def spec_of(ctx: Context, torch_model):
  """The preset's spec at a (pruned) torch model's widths."""
  from thinet_jax import groups, presets

  modules = dict(torch_model.named_modules())
  widths = {
    ours: modules[ctx.model.torch_path(ours)].out_channels
    for ours in ctx.groups
  }
  return groups.with_widths(presets.get(ctx.model.preset), widths)


def flops(ctx: Context, torch_model) -> int:
  from thinet_jax import profile

  return int(profile.count(spec_of(ctx, torch_model), 32)["flops"])


def protocol(ctx: Context) -> dict:
  """`PROTOCOL`, less the batch size in --quick runs (runlocal's)."""
  if ctx.quick:
    return {k: v for k, v in PROTOCOL.items() if k != "batch_size"}
  return PROTOCOL


def data_seed(ctx: Context, seed: int) -> int:
  """The data seed of train.prune's final fine-tune (seed + 1 + groups):
  every method's fine-tune reads the same batches."""
  return seed + 1 + len(ctx.groups)


def run_tp(ctx, method, overrides, seed, budgets) -> dict[float, dict]:
  """One Torch-Pruning criterion: prune once, fine-tune at each budget."""
  import copy
  import itertools

  from benchmarks import torch_side

  criterion = method.removeprefix("tp:")
  decay = overrides.pop("decay", "all")
  baseline = torch_baseline(ctx)
  targets = {ours: ctx.model.torch_path(ours) for ours in ctx.groups}
  grads = itertools.islice(torch_side.batches(seed), 8)  # 1,024 images.
  keep = ctx.config(ctx.model.oneshot).keep_ratio
  pruned, prune_s, history = torch_side.prune(
    baseline, criterion, targets, float(keep), seed=seed,
    gradient_batches=grads,
  )  # fmt: skip
  modules = dict(baseline.named_modules())
  kept = torch_side.kept(
    history, {o: modules[p].out_channels for o, p in targets.items()}, targets
  )
  common = {
    "flops": flops(ctx, pruned), "prune_s": prune_s, "kept": kept,
    "decay": decay,
  }  # fmt: skip
  out = {}
  for budget in budgets:
    start = time.perf_counter()
    if budget == 0:
      history = [{"epoch": 0.0, **torch_side.evaluate(pruned)}]
    else:
      config = ctx.config(
        ctx.model.oneshot, **protocol(ctx), num_epochs=budget, **overrides
      )
      _, history = torch_side.fit(
        copy.deepcopy(pruned), config, data_seed=data_seed(ctx, seed),
        seed=seed, decay=decay, desc=f"{method} seed {seed} {budget:g} ep",
      )  # fmt: skip
    out[budget] = {
      **common, "accuracy": history[-1]["accuracy"],
      "loss": history[-1]["loss"], "wall_s": time.perf_counter() - start,
    }  # fmt: skip
  return out


def _flags(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def run_library(ctx, method, overrides, seed, budgets) -> dict[float, dict]:
  """The library's method by `train.prune`: one pass, then one final
  fine-tune per budget, each started from the pass's steps."""
  from benchmarks import ablation

  init = library_model(ctx, torch_baseline(ctx), "baseline")
  procedure = method == "thinet_jax:procedure"
  paper = method == "thinet_jax:paper"
  config = ctx.path(ctx.model.procedure if procedure else ctx.model.oneshot,
                    paper)  # fmt: skip
  fields = {"init_checkpoint": init, "seed": seed, **overrides}
  if ctx.quick:
    fields |= {"finetune_epochs": 0.0, "stage_end_epochs": 0.0}
  name = method + "".join(f"+{k}={v}" for k, v in overrides.items())
  base = ctx.runs / ctx.key / name.replace(":", "-") / f"seed{seed}"
  out = {}
  for budget in budgets:
    workdir = base / f"{budget:g}"
    final = budget
    if procedure:  # The groups' fine-tunes count towards the budget.
      final = budget - _procedure_epochs(ctx, budget)
      fields |= _procedure_fields(ctx, budget)
    cmd = [
      sys.executable, "-m", "train.prune", f"--config={config}",
      f"--workdir={workdir}", *_flags({**fields, "num_epochs": final}),
    ]  # fmt: skip
    pass_dir = _pass_dir(ctx, method, overrides, seed)
    if not procedure and budget and (pass_dir / "report.json").exists():
      ablation.copy_steps(pass_dir, workdir)  # Reuse the pruning pass.
    start = time.perf_counter()
    if not (workdir / "report.json").exists():
      ablation.run_resumable(cmd, f"{name} seed {seed} budget {budget:g}")
    report = json.loads((workdir / "report.json").read_text())
    out[budget] = {
      "accuracy": report["pruned"]["accuracy"],
      "before_finetune": report["pruned"]["accuracy_before_final_finetune"],
      "baseline_accuracy": report["baseline"]["accuracy"],
      "flops": report["pruned"]["flops"],
      "wall_s": report["wall_s"], "command": " ".join(cmd[1:]),
      "this_run_s": time.perf_counter() - start,
    }  # fmt: skip
  return out


def _pass_dir(ctx, method: str, overrides: dict, seed: int) -> pathlib.Path:
  """The budget-0 run whose pruning pass a one-shot run starts from: the
  method's with the overrides that reach the pass (those of the final
  fine-tune only do not; `train.prune` then resumes from its steps)."""
  from train import common

  fine_tune_only = set(common.FINAL_FIELDS + common.TRAINING_FIELDS)
  name = method + "".join(
    f"+{k}={v}" for k, v in overrides.items() if k not in fine_tune_only
  )
  return ctx.runs / ctx.key / name.replace(":", "-") / f"seed{seed}" / "0"


def _procedure_fields(ctx, budget: float) -> dict:
  """Per-group fine-tunes of the procedure scaled to the budget: the VGG
  main job's 0.1 / 0.2 epochs (stage ends) per group times budget / 2.4
  (its total); the final fine-tune gets the rest of the budget."""
  scale = budget / 2.4
  return {"finetune_epochs": 0.1 * scale, "stage_end_epochs": 0.2 * scale}


def _procedure_epochs(ctx, budget: float) -> float:
  from thinet_jax import presets, procedure

  spec = presets.get(ctx.model.preset)
  ends = procedure.stage_ends(spec)
  f = _procedure_fields(ctx, budget)
  return sum(
    f["stage_end_epochs"] if g in ends else f["finetune_epochs"]
    for g in ctx.groups
  )


def run_parity(ctx, method, overrides, seed, budgets) -> dict[float, dict]:
  """Torch-Pruning's per-filter-L1 model fine-tuned by the library's
  `train.main`, on the batches `tp:l1`'s PyTorch fine-tune reads."""
  from benchmarks import ablation, torch_side

  criterion = method.removeprefix("parity:")
  baseline = torch_baseline(ctx)
  targets = {ours: ctx.model.torch_path(ours) for ours in ctx.groups}
  keep = ctx.config(ctx.model.oneshot).keep_ratio
  pruned, _, _ = torch_side.prune(
    baseline, criterion, targets, float(keep), seed=seed
  )
  init = library_model(ctx, pruned, f"tp-{criterion}-seed{seed}")
  config = ctx.path(ctx.model.oneshot)
  name = method + "".join(f"+{k}={v}" for k, v in overrides.items())
  base = ctx.runs / ctx.key / name.replace(":", "-") / f"seed{seed}"
  out = {}
  for budget in budgets:
    if budget == 0:
      continue  # The pruned weights are tp:l1's: the same accuracy.
    workdir = base / f"{budget:g}"
    # The data seed is the TP cell's, so the batches are the same; the
    # dropout masks come from another generator on each side.
    fields = {
      **protocol(ctx), "init_checkpoint": init,
      "seed": data_seed(ctx, seed),
      "num_epochs": budget, **overrides,
    }  # fmt: skip
    cmd = [
      sys.executable, "-m", "train.main", f"--config={config}",
      f"--workdir={workdir}", *_flags(fields),
    ]  # fmt: skip
    if not (workdir / "report.json").exists():
      ablation.run_resumable(cmd, f"{name} seed {seed} budget {budget:g}")
    report = json.loads((workdir / "report.json").read_text())
    out[budget] = {
      "accuracy": report["accuracy"], "flops": report["flops"],
      "wall_s": report["wall_s"], "command": " ".join(cmd[1:]),
    }  # fmt: skip
  return out


RUNNERS = {"tp": run_tp, "thinet_jax": run_library, "parity": run_parity}


def run_cells(ctx, method_names, seeds, budgets, extra, path) -> dict:
  """Runs every missing cell, storing each (method, seed) as it finishes."""
  result = load(path)
  for method in method_names:
    base, overrides = parse_method(method, extra)
    for seed in seeds:
      todo = [
        b for b in budgets if cell_key(method, seed, b) not in result["cells"]
      ]
      if base == "parity:l1" or base.startswith("parity:"):
        todo = [b for b in todo if b]
      if base == "thinet_jax:procedure":
        todo = [b for b in todo if b >= 0.5]
      if not todo:
        continue
      print(f"== {ctx.key} {method} seed {seed}: budgets {todo}", flush=True)
      runner = RUNNERS[base.split(":")[0]]
      cells = runner(ctx, base, dict(overrides), seed, todo)
      result = load(path)  # Another process may have stored cells.
      for budget, cell in cells.items():
        result["cells"][cell_key(method, seed, budget)] = {
          "method": method, "base": base, "overrides": overrides,
          "seed": seed, "budget": budget, **cell,
        }  # fmt: skip
      result["machine"] = _machine()
      store(path, result)
  return result


def _machine() -> dict:
  import importlib.metadata

  from thinet_jax import report as report_lib

  return {
    **report_lib.machine(),
    "torch": importlib.metadata.version("torch"),
    "torch_pruning": importlib.metadata.version("torch-pruning"),
  }


# --- tables and plots -------------------------------------------------------


def summary(result: dict) -> dict[str, dict[float, tuple[float, float, int]]]:
  """method -> budget -> (mean, sample std, seeds) of the accuracy."""
  groups: dict[str, dict[float, list[float]]] = {}
  for cell in result["cells"].values():
    per = groups.setdefault(cell["method"], {})
    per.setdefault(cell["budget"], []).append(cell["accuracy"])
  out = {}
  for method, per in groups.items():
    out[method] = {
      b: (
        statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0,
        len(v),
      )
      for b, v in sorted(per.items())
    }  # fmt: skip
  return out


def _order(method: str) -> tuple:
  base = method.split("+")[0]
  rank = methods().index(base) if base in methods() else len(methods())
  return (rank, method)


def markdown(result: dict) -> str:
  """One row per method, one column per budget: mean ± std (seeds)."""
  table = summary(result)
  budgets = sorted({b for per in table.values() for b in per})
  head = ["method", *(f"{b:g} epochs" for b in budgets), "FLOPs"]
  lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  flops = {}
  for cell in result["cells"].values():
    flops.setdefault(cell["method"], cell["flops"])
  for method in sorted(table, key=_order):
    per = table[method]
    cells = [
      f"{100 * per[b][0]:.2f} ± {100 * per[b][1]:.2f} ({per[b][2]})"
      if b in per else ""
      for b in budgets
    ]  # fmt: skip
    lines.append(
      f"| `{method}` | "
      + " | ".join(cells)
      + f" | {flops[method] / 1e6:.2f}M |"
    )
  return "\n".join(lines)


def figure(result: dict, title: str):
  """Accuracy against fine-tune epochs, one line per method: every budget
  on the left (0 epochs drawn at 0.03 on the log axis), the fine-tuned
  budgets on the right at a scale where the gaps show. The `+k=v`
  variants are in the table only."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  table = summary(result)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
  for ax, lowest in zip(axes, (0.0, 0.1), strict=True):
    for method in sorted((m for m in table if "+" not in m), key=_order):
      per = table[method]
      xs = [b for b in sorted(per) if b >= lowest]
      means = [100 * per[b][0] for b in xs]
      stds = [100 * per[b][1] for b in xs]
      style = "-" if method.startswith("thinet_jax") else "--"
      ax.errorbar([max(b, 0.03) for b in xs], means, yerr=stds,
                  label=method, linestyle=style, marker="o",
                  capsize=3)  # fmt: skip
    ax.set_xscale("log")
    ticks = [b for b in BUDGETS if b >= lowest]
    ax.set_xticks([max(b, 0.03) for b in ticks], [f"{b:g}" for b in ticks])
    ax.minorticks_off()
    ax.set_xlabel("fine-tune epochs after the one-shot prune")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("test accuracy (%)")
  axes[0].set_title(title)
  axes[1].set_title("fine-tuned budgets, zoomed")
  axes[1].legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  return fig


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=sorted(MODELS), default="vgg")
  parser.add_argument("--methods", nargs="+", default=None)
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--budgets", nargs="+", type=float,
                      default=list(BUDGETS))  # fmt: skip
  parser.add_argument("--set", nargs="*", default=[], metavar="NAME:K=V,..",
                      help="a variant's overrides")  # fmt: skip
  parser.add_argument("--runs", default="runs/peer")
  parser.add_argument("--baselines", default=str(ROOT / "baselines" / "torch"))
  parser.add_argument("--out", default=None, help="results prefix")
  parser.add_argument(
    "--report",
    action="store_true",
    help="write the tables and plot; run nothing",
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="runlocal configs, untrained model, 1 seed",
  )
  args = parser.parse_args()  # fmt: skip
  extra = {}
  for item in args.set:
    name, _, pairs = item.rpartition(":")
    extra[name] = dict(p.split("=", 1) for p in pairs.split(","))
  if args.quick:
    if args.out is None:
      raise SystemExit("--quick needs --out (it must not replace results)")
    args.runs = args.out + "_runs"
    args.seeds = [0]
    args.budgets = [0.0, 1.0]
  ctx = Context(args.model, MODELS[args.model], pathlib.Path(args.runs),
                args.quick, pathlib.Path(args.baselines))  # fmt: skip
  path = results_path(args.model, args.out)
  if not args.report:
    run_cells(ctx, args.methods or methods(), args.seeds,
                       args.budgets, extra, path)  # fmt: skip
  print(markdown(load(path)))


if __name__ == "__main__":
  main()
