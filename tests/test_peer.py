"""The side-by-side benchmark with Torch-Pruning (benchmarks/peer.py): its
PyTorch side against NumPy references, the import of a pruned PyTorch
model, and one quick end-to-end run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks import peer, torch_models, torch_side
from thinet_jax import models, train

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _trained_looking(name: str, seed: int = 0):
  """A twin with spread-out BatchNorm, so every channel differs."""
  torch.manual_seed(seed)
  model = torch_models.fmnist(name)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.2, 1.5)
        m.bias.normal_(0, 0.2)
        m.running_mean.normal_(0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
  return model.eval()


def _top_half_l1(weight: torch.Tensor) -> list[int]:
  """Li et al.'s per-filter L1, in NumPy: the larger half of the filters."""
  norms = np.abs(weight.detach().numpy()).reshape(weight.shape[0], -1)
  order = np.argsort(-norms.sum(1), kind="stable")
  return sorted(order[: weight.shape[0] // 2].tolist())


def test_tp_l1_keeps_the_filters_of_largest_l1_norm():
  model = _trained_looking("vgg16-fmnist")
  # Torch-Pruning scores every group before it cuts any, so conv1_2 (which
  # reads the pruned conv1_1) is scored on its original weights too.
  targets = {"conv1_1": "features.0", "conv1_2": "features.3",
             "conv2_1": "features.7"}  # fmt: skip
  pruned, _, history = torch_side.prune(model, "l1", targets, 0.5, seed=0)
  modules = dict(model.named_modules())
  kept = torch_side.kept(
    history, {o: modules[p].out_channels for o, p in targets.items()}, targets
  )
  for ours, path in targets.items():
    assert kept[ours] == _top_half_l1(modules[path].weight)
    assert dict(pruned.named_modules())[path].out_channels == len(kept[ours])
  # The original is untouched.
  assert modules["features.0"].out_channels == 16


@pytest.mark.parametrize("key", ["vgg", "resnet"])
def test_a_pruned_torch_model_imports_into_the_library_exactly(tmp_path, key):
  ctx = peer.Context(key, peer.MODELS[key], tmp_path, False, tmp_path)
  model = _trained_looking(ctx.model.preset)
  targets = {o: ctx.model.torch_path(o) for o in ctx.groups[:3]}
  pruned, _, _ = torch_side.prune(model, "random", targets, 0.5, seed=1)
  spec, variables, _ = train.load_model(
    str(peer.library_model(ctx, pruned, "pruned"))
  )
  x = np.random.default_rng(0).normal(size=(3, 32, 32, 1)).astype(np.float32)
  ours = np.asarray(models.build(spec).apply(variables, x))
  with torch.no_grad():
    theirs = pruned(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  first = ctx.groups[0]
  assert peer.library_model(ctx, pruned, "pruned")  # Cached, not redone.
  widths = dict(pruned.named_modules())[targets[first]].out_channels
  assert widths == dict(model.named_modules())[targets[first]].out_channels // 2


def test_torch_paths_name_the_layers_we_prune():
  vgg = dict(torch_models.fmnist("vgg16-fmnist").named_modules())
  resnet = dict(torch_models.fmnist("resnet-fmnist").named_modules())
  # conv3_1 is the 5th conv: features.0, 3, 7, 10, 14.
  assert peer.MODELS["vgg"].torch_path("conv3_1") == "features.14"
  assert vgg["features.14"].in_channels == 32
  path = peer.MODELS["resnet"].torch_path("res3b/branch2b")
  assert path == "layer2.1.conv2"
  assert resnet[path].kernel_size == (3, 3)


@pytest.mark.parametrize("arg", ["paper", "runlocal,paper"])
def test_paper_on_the_resnet_budget_is_the_published_method(arg):
  """The ResNet budget's default fine-tunes its distilled student its own
  way; `:paper` (how peer.py runs thinet_jax:paper) keeps the protocol."""
  from configs import default, fmnist_resnet_oneshot

  ours = fmnist_resnet_oneshot.get_config()
  for key, value in fmnist_resnet_oneshot.DISTILLED_FINETUNE.items():
    assert ours[key] == value
  assert ours.weight_decay != peer.PROTOCOL["weight_decay"]
  paper = fmnist_resnet_oneshot.get_config(arg)
  for key, value in default.PAPER_METHOD.items():
    assert paper[key] == value
  for key in ("learning_rate", "momentum", "nesterov", "weight_decay"):
    assert paper[key] == peer.PROTOCOL[key]


def test_the_quick_run_stores_cells_at_equal_flops(tmp_path):
  out = tmp_path / "p"
  cmd = [
    sys.executable, str(ROOT / "benchmarks" / "peer.py"), "--quick",
    "--out", str(out), "--methods", "tp:l1", "parity:l1",
  ]  # fmt: skip
  subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
  cells = json.loads((tmp_path / "p_vgg.json").read_text())["cells"]
  assert sorted(cells) == [
    "parity:l1|seed0|1", "tp:l1|seed0|0", "tp:l1|seed0|1",
  ]  # fmt: skip
  assert len({c["flops"] for c in cells.values()}) == 1
  # The quick baseline is the seed-0 initialisation: TP's l1 kept the
  # filters of conv1_1 with the larger L1 norms.
  torch.manual_seed(0)
  baseline = torch_models.fmnist("vgg16-fmnist")
  kept = cells["tp:l1|seed0|0"]["kept"]["conv1_1"]
  assert kept == _top_half_l1(baseline.features[0].weight)
  # A second run finds every cell and runs nothing.
  again = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
  assert "== vgg" not in again.stdout


def test_a_pass_is_copied_with_its_allocation_and_head(tmp_path):
  """`ablation.copy_steps` gives a fine-tune-only variant every step the
  pass made before its final fine-tune (a budget run's allocation with
  its counts, a new head, the group steps), and leaves what the workdir
  has already."""
  from benchmarks import ablation

  source, workdir = tmp_path / "pass", tmp_path / "variant"
  for name in ("head", "allocation", "steps/00_conv1_1"):
    (source / name).mkdir(parents=True)
    (source / name / "done.json").write_text(name)
  (workdir / "steps").mkdir(parents=True)  # a resumed variant's own steps
  (workdir / "steps" / "mine.json").write_text("mine")
  ablation.copy_steps(source, workdir)
  assert (workdir / "allocation" / "done.json").read_text() == "allocation"
  assert (workdir / "head" / "done.json").read_text() == "head"
  assert sorted(p.name for p in (workdir / "steps").iterdir()) == ["mine.json"]
  fresh = tmp_path / "fresh"
  ablation.copy_steps(source, fresh)
  assert (fresh / "steps" / "00_conv1_1" / "done.json").exists()
  assert not list(fresh.glob("*.partial"))
