"""Test helpers for pretrained-weight import: PyTorch models in
torchvision's module layout (torchvision itself is not a dependency), and
a fake `imagenet2012` in its TFDS layout."""

import io

import numpy as np
import torch
from tensorflow_datasets.datasets.imagenet2012 import (
  imagenet2012_dataset_builder as imagenet,
)
from torch import nn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512,
             "M", 512, 512, 512, "M"]  # fmt: skip


class TorchVGG(nn.Module):
  """torchvision.models.VGG's layout: features, avgpool, classifier."""

  def __init__(self, cfg, batch_norm, fc, classes, in_ch, side):
    super().__init__()
    layers, c = [], in_ch
    for v in cfg:
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
        continue
      layers.append(nn.Conv2d(c, v, 3, padding=1))
      if batch_norm:
        layers.append(nn.BatchNorm2d(v))
      layers.append(nn.ReLU(inplace=True))
      c = v
    self.features = nn.Sequential(*layers)
    self.avgpool = nn.AdaptiveAvgPool2d((side, side))
    self.classifier = nn.Sequential(
      nn.Linear(c * side * side, fc[0]), nn.ReLU(True), nn.Dropout(),
      nn.Linear(fc[0], fc[1]), nn.ReLU(True), nn.Dropout(),
      nn.Linear(fc[1], classes),
    )  # fmt: skip

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


class TorchBottleneck(nn.Module):
  """torchvision's Bottleneck: stride in conv2 (the 3x3)."""

  def __init__(self, cin, wa, wb, cout, stride, projection):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, wa, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(wa)
    self.conv2 = nn.Conv2d(wa, wb, 3, stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(wb)
    self.conv3 = nn.Conv2d(wb, cout, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = None
    if projection:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.relu(y + shortcut)


class TorchResNet(nn.Module):
  """torchvision.models.ResNet's layout with bottlenecks."""

  def __init__(self, sizes, inner, out, stem, classes, in_ch):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, stem, 7, 2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(stem)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, padding=1)
    cin = stem
    for s, (n, w, c) in enumerate(zip(sizes, inner, out, strict=True)):
      blocks = []
      for b in range(n):
        stride = 2 if (b == 0 and s > 0) else 1
        blocks.append(TorchBottleneck(cin, w, w, c, stride, b == 0))
        cin = c
      setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
    self.sizes = sizes
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(cin, classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for s in range(len(self.sizes)):
      x = getattr(self, f"layer{s + 1}")(x)
    return self.fc(torch.flatten(self.avgpool(x), 1))


def full_size(arch: str, side: int = 7) -> nn.Module:
  """torchvision's VGG-16 ("vgg16", "vgg16_bn") or ResNet-50 ("resnet50")
  at full size, 1000 classes; `side` is VGG's last feature map (7 at
  224x224, 1 at 32x32). Build it under `torch.device("meta")` when only
  the shapes are needed."""
  if arch.startswith("vgg"):
    return TorchVGG(VGG16_CFG, arch == "vgg16_bn", (4096, 4096), 1000, 3, side)
  return TorchResNet((3, 4, 6, 3), (64, 128, 256, 512),
                     (256, 512, 1024, 2048), 64, 1000, 3)  # fmt: skip


def random_state_dict(model: nn.Module, seed: int = 0) -> dict:
  """NumPy state dict of a (meta-device) model: He-normal weights, random
  BatchNorm statistics, no `num_batches_tracked`."""
  rng = np.random.default_rng(seed)
  out = {}
  for k, v in model.state_dict().items():
    if k.endswith("num_batches_tracked"):
      continue
    shape = tuple(v.shape)
    if k.endswith("running_var"):
      value = rng.uniform(0.5, 2.0, shape)
    elif len(shape) > 1:
      value = rng.normal(0, (2 / np.prod(shape[1:])) ** 0.5, shape)
    else:
      value = rng.normal(0, 0.1, shape)
    out[k] = value.astype(np.float32)
  return out


class FakeImagenet(imagenet.Builder, skip_registration=True):
  """`imagenet2012` with its TFDS name, version and features, filled with
  a few random JPEGs per class of the first `classes` classes, so the data
  source reads it back as ImageNet."""

  name = "imagenet2012"  # Not the class name: read back as ImageNet.
  # TFDS reads the description and citation beside the builder's module.
  __module__ = imagenet.__name__

  def __init__(self, *, classes=3, per_class=2, size=(40, 52), **kwargs):
    self._fake = (classes, per_class, size)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {
      "train": self._fake_examples(0),
      "validation": self._fake_examples(1),
    }

  def _fake_examples(self, seed):
    from PIL import Image

    classes, per_class, (h, w) = self._fake
    rng = np.random.default_rng(seed)
    for c in range(classes):
      for i in range(per_class):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="jpeg")
        key = f"c{c}_{i}"
        yield (
          key,
          {"image": buffer.getvalue(), "label": c, "file_name": f"{key}.JPEG"},
        )


def prepare_fake_imagenet(data_dir: str, **kwargs) -> None:
  builder = FakeImagenet(data_dir=data_dir, **kwargs)
  builder.download_and_prepare(file_format="array_record")
