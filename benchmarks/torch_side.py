"""The PyTorch side of benchmarks/peer.py: training, evaluation and
Torch-Pruning, fed the library's own batches.

Both sides of the side-by-side read the same batches: `batches` wraps
`thinet_jax.data.dataset` (the same shuffling, pad-and-crop, flip and
normalisation, keyed by the same seed) and hands them to PyTorch as NCHW
tensors, so a difference between the sides is the training arithmetic, not
the data. The learning rate of step t is `thinet_jax.optim.schedule`'s, so
the schedules are the same function too.

`fit` is the PyTorch user's fine-tune: `torch.optim.SGD` with its
`weight_decay` on every parameter (PyTorch's default), or on conv and
linear weights only (`decay="kernels"`, the library's), a per-step
`LambdaLR`, `nn.CrossEntropyLoss`, dropout from `torch.manual_seed`.

`prune` is Torch-Pruning 1.6's one-shot `MetaPruner` with its own
importance criteria (`CRITERIA`), local (per-layer) ratios on the layers a
`peer.MODELS` entry names, and no reconstruction; `kept` reads its pruning
history back as the channels each layer kept.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
import torch
from torch import nn

from thinet_jax import data, optim
from thinet_jax import progress as progress_lib


def _to_torch(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
  images = torch.from_numpy(np.ascontiguousarray(batch["image"]))
  return images.permute(0, 3, 1, 2), torch.from_numpy(batch["label"]).long()


def batches(seed: int, batch_size: int = 128, crop_pad: int = 4,
            data_dir: str | None = None):  # fmt: skip
  """The library's train batches (`data.dataset`, repeating, augmented)."""
  return data.dataset(
    "fashion_mnist", "train", data_dir=data_dir, batch_size=batch_size,
    image_size=32, train=True, seed=seed, num_epochs=None,
    crop_pad=crop_pad,
  )  # fmt: skip


def steps_per_epoch(batch_size: int = 128, data_dir: str | None = None) -> int:
  """Full batches per epoch (the library drops the short last one)."""
  n = len(data.source("fashion_mnist", "train", data_dir))
  return n // batch_size


@torch.no_grad()
def evaluate(model: nn.Module, data_dir: str | None = None) -> dict:
  """Test accuracy and loss on the whole Fashion-MNIST test split."""
  model.eval()
  ds = data.dataset(
    "fashion_mnist", "test", data_dir=data_dir, batch_size=500,
    image_size=32, train=False,
  )  # fmt: skip
  correct = loss = count = 0.0
  for batch in ds:
    x, y = _to_torch(batch)
    mask = torch.from_numpy(batch["mask"]).bool()
    logits = model(x)[mask]
    y = y[mask]
    loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
    correct += (logits.argmax(-1) == y).sum().item()
    count += int(mask.sum())
  return {"accuracy": correct / count, "loss": loss / count}


def _param_groups(model: nn.Module, weight_decay: float, decay: str):
  if decay == "all":  # PyTorch's default: every parameter.
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
  if decay != "kernels":
    raise ValueError(f'decay must be "all" or "kernels", got {decay!r}')
  kernels, others = [], []
  for module in model.modules():
    for name, p in module.named_parameters(recurse=False):
      is_kernel = name == "weight" and isinstance(
        module, (nn.Conv2d, nn.Linear)
      )
      (kernels if is_kernel else others).append(p)
  return [
    {"params": kernels, "weight_decay": weight_decay},
    {"params": others, "weight_decay": 0.0},
  ]


def fit(
  model: nn.Module,
  config: ml_collections.ConfigDict,
  *,
  data_seed: int,
  seed: int,
  decay: str = "all",
  checkpoint: str | None = None,
  evaluate_every_epoch: bool = False,
  desc: str = "torch fine-tune",
) -> tuple[nn.Module, list[dict]]:
  """Trains `model` in place for `config.num_epochs` (a fraction is fine).

  Args:
    config: learning_rate, momentum, nesterov, weight_decay, schedule,
      warmup_epochs, num_epochs, batch_size (the library's fields).
    data_seed: the batches' seed (`batches`).
    seed: torch's seed (dropout).
    decay: "all" (PyTorch's default) or "kernels" (conv/linear weights).
    checkpoint: a file to save to after every epoch and resume from.
    evaluate_every_epoch: evaluate after every whole epoch too.

  Returns:
    (model, history): one {"epoch", "accuracy", "loss"} per evaluation,
    the last at the end.
  """
  per_epoch = config.steps_per_epoch
  if per_epoch <= 0:
    per_epoch = steps_per_epoch(config.batch_size)
  total = max(0, int(round(config.num_epochs * per_epoch)))
  lr = optim.schedule(config, per_epoch)
  opt = torch.optim.SGD(
    _param_groups(model, config.weight_decay, decay),
    lr=config.learning_rate, momentum=config.momentum,
    nesterov=config.nesterov,
  )  # fmt: skip
  base = config.learning_rate
  rates = np.asarray(lr(np.arange(total + 1))) / base if base else None
  sched = torch.optim.lr_scheduler.LambdaLR(
    opt,
    (lambda t: float(rates[min(t, total)]))
    if rates is not None
    else (lambda t: 1.0),
  )
  iterator = iter(batches(data_seed, config.batch_size, config.crop_pad))
  torch.manual_seed(seed)
  start, history = 0, []
  if checkpoint and os.path.exists(checkpoint):
    saved = torch.load(checkpoint, weights_only=False)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    iterator.set_state(json.loads(saved["data"]))
    torch.set_rng_state(saved["rng"])
    start, history = saved["step"], saved["history"]
  bar = progress_lib.bar(total=total, initial=start, desc=desc, unit="step")
  loss_fn = nn.CrossEntropyLoss()
  for step in range(start, total):
    model.train()
    x, y = _to_torch(next(iterator))
    loss = loss_fn(model(x), y)
    if not math.isfinite(loss.item()):
      raise FloatingPointError(
        f"{desc} diverged at step {step + 1} (loss {loss.item()}); lower the "
        "learning rate"
      )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    bar.update(1)
    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    done = step + 1
    if done % per_epoch == 0 and done < total:
      if evaluate_every_epoch:
        history.append({"epoch": done / per_epoch, **evaluate(model)})
      if checkpoint:
        state = {
          "model": model.state_dict(), "opt": opt.state_dict(),
          "sched": sched.state_dict(), "step": done, "history": history,
          "data": json.dumps(iterator.get_state()),
          "rng": torch.get_rng_state(),
        }  # fmt: skip
        torch.save(state, checkpoint + ".partial")
        os.replace(checkpoint + ".partial", checkpoint)
  bar.close()
  history.append({"epoch": total / per_epoch, **evaluate(model)})
  return model, history


# Torch-Pruning's criteria, each its documented configuration (the
# GroupMagnitudeImportance docstring): local ratios, so the normaliser does
# not change the ranking inside a layer.
def _criteria() -> dict[str, Callable]:
  import torch_pruning as tp

  imp = tp.importance
  return {
    "group_l1": lambda: imp.GroupMagnitudeImportance(p=1),
    "l1": lambda: imp.MagnitudeImportance(p=1, group_reduction="first"),
    "taylor": lambda: imp.GroupTaylorImportance(),
    "bn_scale": lambda: imp.BNScaleImportance(),
    "random": lambda: imp.RandomImportance(),
  }


CRITERIA = (
  "group_l1",  # Group L1 norm over every coupled layer (DepGraph's default).
  "l1",  # L1 norm of the pruned conv's own filters (Li et al. 2017).
  "taylor",  # First-order Taylor of the loss (Molchanov et al. 2019).
  "bn_scale",  # |gamma| of the following BatchNorm (Liu et al. 2017).
  "random",
)


def prune(
  model: nn.Module,
  criterion: str,
  targets: dict[str, str],
  keep_ratio: float,
  *,
  seed: int,
  gradient_batches: Iterator[dict] | None = None,
) -> tuple[nn.Module, float, list]:
  """A pruned copy of `model` by Torch-Pruning (one shot, no fine-tune).

  Args:
    criterion: a name in `CRITERIA`.
    targets: our layer name -> the module path of the conv whose output
      channels are cut, each to `width - int((1 - keep_ratio) * width)`
      (TP's rounding: it removes `int((1 - keep_ratio) * width)`).
    gradient_batches: the batches Taylor accumulates gradients over.

  Returns:
    (pruned model, seconds, Torch-Pruning's pruning history).
  """
  import torch_pruning as tp

  if criterion not in CRITERIA:
    raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")
  start = time.perf_counter()
  model = copy.deepcopy(model).eval()
  modules = dict(model.named_modules())
  torch.manual_seed(seed)  # RandomImportance draws from torch.
  example = torch.zeros(1, 1, 32, 32)
  pruner = tp.pruner.MetaPruner(
    model, example, importance=_criteria()[criterion](),
    pruning_ratio=0.0,
    pruning_ratio_dict={modules[p]: 1.0 - keep_ratio for p in targets.values()},
  )  # fmt: skip
  unpruned = {p: modules[p].out_channels for p in targets.values()}
  if criterion == "taylor":
    model.zero_grad()
    loss_fn = nn.CrossEntropyLoss()
    for batch in gradient_batches or ():
      x, y = _to_torch(batch)
      loss_fn(model(x), y).backward()
  pruner.step()
  model.zero_grad(set_to_none=True)
  same = [p for p, w in unpruned.items() if modules[p].out_channels == w]
  if same:
    raise RuntimeError(f"Torch-Pruning left {same} unpruned")
  return model, time.perf_counter() - start, pruner.pruning_history()


def kept(pruner_history: list, widths: dict[str, int],
         targets: dict[str, str]) -> dict[str, list[int]]:  # fmt: skip
  """Our layer name -> the original output channels its conv kept, from
  Torch-Pruning's `pruning_history()` ((module path, output?, removed
  indices) per pruned group). `widths`: our name -> original width;
  `targets`: our name -> the torch module path of its conv."""
  removed = {path: set(idxs) for path, is_out, idxs in pruner_history if is_out}
  return {
    ours: sorted(set(range(widths[ours])) - removed.get(path, set()))
    for ours, path in targets.items()
  }


def numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
  """The state dict as NumPy, without `num_batches_tracked`."""
  return {
    k: v.detach().cpu().numpy()
    for k, v in model.state_dict().items()
    if not k.endswith("num_batches_tracked")
  }
