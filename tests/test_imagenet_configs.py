"""The ImageNet recipes: every config loads with the paper's settings, and
runs end to end (`:runlocal`) on a tiny fake `imagenet2012` from weights
converted by `train.convert` out of a torchvision-named state dict."""

import fcntl
import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.numpy import save_file

from thinet_jax import groups, presets, train

from torch_models import full_size, prepare_fake_imagenet, random_state_dict

ROOT = pathlib.Path(__file__).resolve().parent.parent

CONFIGS = {
  "imagenet_vgg16_thinet_conv": ("vgg16", 0.5, ""),
  "imagenet_vgg16_thinet_gap": ("vgg16", 0.5, "gap"),
  "imagenet_resnet50_thinet_70": ("resnet50-torchvision", 0.7, ""),
  "imagenet_resnet50_thinet_50": ("resnet50-torchvision", 0.5, ""),
  "imagenet_resnet50_thinet_30": ("resnet50-torchvision", 0.3, ""),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_has_the_papers_settings(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  model, ratio, head = CONFIGS[name]
  assert (config.model, config.keep_ratio, config.head) == (model, ratio, head)
  assert config.dataset == "imagenet2012" and config.image_size == 224
  assert (config.images_per_class, config.samples_per_image) == (10, 10)
  assert config.criterion == "thinet" and not config.centred  # as published
  spec = presets.get(model)
  expected = [g.name for g in groups.paper_groups(spec)]
  assert len(expected) == (10 if model == "vgg16" else 32)
  assert config.groups == ()  # () = exactly those


def _once(tmp_path_factory, name, make):
  """`make(directory)` run once for all xdist workers of this pytest run
  (pytest-xdist's documented pattern, fcntl in place of filelock; its
  `xdist_group` mark no longer groups under pytest 9.2)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # shared by the workers
  directory = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (directory / "done").exists():
      shutil.rmtree(directory, ignore_errors=True)
      directory.mkdir()
      make(directory)
      (directory / "done").touch()
  return directory


@pytest.fixture(scope="session")
def fake_imagenet(tmp_path_factory):
  return _once(
    tmp_path_factory, "fake_imagenet",
    lambda directory: prepare_fake_imagenet(str(directory)),
  )  # fmt: skip


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
  """Full-size torchvision-named VGG-16 and ResNet-50 (random values,
  shapes from meta-device modules) through `train.convert`, once each."""

  def make(directory):
    for arch in ("vgg16", "resnet50"):
      with torch.device("meta"):  # shapes only; values from NumPy
        model = full_size(arch, side=1)  # 32x32 inputs
      _convert(directory, arch, model)

  directory = _once(tmp_path_factory, "imagenet_checkpoints", make)
  return {arch: directory / arch for arch in ("vgg16", "resnet50")}


def _convert(tmp_path, arch, model):
  weights = tmp_path / f"{arch}.safetensors"
  save_file(random_state_dict(model), str(weights))
  out = tmp_path / arch
  result = subprocess.run(
    [sys.executable, "-m", "train.convert", "--source=torchvision",
     f"--arch={arch}", f"--weights={weights}", f"--out={out}",
     "--image_size=32"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--config.preprocessing=torchvision" in result.stdout
  return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_runlocal_end_to_end_on_fake_imagenet(
  tmp_path, fake_imagenet, checkpoints, name
):
  """Every config's `:runlocal`: its first group pruned at the config's
  ratio (the GAP head surgery first for ThiNet-GAP), then the config's
  final fine-tune, on weights converted by `train.convert`. The three
  ResNet runs share their unpruned programs through the tests'
  compilation cache."""
  checkpoint = checkpoints["vgg16" if "vgg" in name else "resnet50"]
  workdir = tmp_path / "run"
  result = subprocess.run(
    [sys.executable, "-m", "train.prune",
     f"--config=configs/{name}.py:runlocal", f"--workdir={workdir}",
     f"--config.init_checkpoint={checkpoint}",
     f"--config.data_dir={fake_imagenet}"],
    capture_output=True, text=True, cwd=ROOT, timeout=1200,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((workdir / "report.json").read_text())
  assert report["config"]["dataset"] == "imagenet2012"
  assert report["config"]["preprocessing"] == "torchvision"
  ratio = CONFIGS[name][1]
  for step in report["steps"]:
    assert step["width_after"] == int(step["width_before"] * ratio)
  assert [s["group"] for s in report["steps"]] == [
    "conv1_1" if "vgg" in name else "res2a/branch2a"
  ]  # runlocal: the first of the paper's groups
  spec, _, meta = train.load_model(str(workdir / "model"))
  assert meta["image_size"] == 32
  assert spec.head == (CONFIGS[name][2] or "fc")
  group = groups.get(spec, report["steps"][0]["group"])
  assert group.width == report["steps"][0]["width_after"]  # really smaller
