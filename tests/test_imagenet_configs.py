"""The ImageNet recipes: every config loads with the paper's settings, and
runs end to end (`:runlocal`) on a tiny fake `imagenet2012` from weights
converted by `train.convert` out of a torchvision-named state dict."""

import importlib
import json
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors.numpy import save_file

from thinet_jax import groups, presets, train

from torch_models import (
  VGG16_CFG,
  TorchResNet,
  TorchVGG,
  prepare_fake_imagenet,
  random_state_dict,
)

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


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  prepare_fake_imagenet(str(data_dir))
  return data_dir


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


@pytest.mark.parametrize(
  "name", ["imagenet_vgg16_thinet_gap", "imagenet_resnet50_thinet_30"]
)
def test_runlocal_end_to_end_on_fake_imagenet(tmp_path, fake_imagenet, name):
  """The VGG path (with the GAP head surgery) and the ResNet path; the
  other three configs differ from these only in fields the test above
  checks (the head, the keep ratio)."""
  arch = "vgg16" if "vgg" in name else "resnet50"
  with torch.device("meta"):  # shapes only; values from NumPy
    model = (
      TorchVGG(VGG16_CFG, False, (4096, 4096), 1000, 3, 1) if arch == "vgg16"
      else TorchResNet((3, 4, 6, 3), (64, 128, 256, 512),
                       (256, 512, 1024, 2048), 64, 1000, 3)
    )  # fmt: skip
  checkpoint = _convert(tmp_path, arch, model)
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
  spec, _, meta = train.load_model(str(workdir / "model"))
  assert meta["image_size"] == 32
  assert spec.head == ("gap" if "gap" in name else spec.head)
