"""PyTorch models in torchvision's module layout (torchvision itself is not
a dependency: its wheel here is a CUDA build).

The layouts are torchvision's (`features` / `avgpool` / `classifier` for
VGG; `conv1` / `bn1` / `layer1..4` / `fc` for ResNet), so
`thinet_jax.interop.from_torchvision` reads their state dicts. Beside the
full-size ImageNet models, `fmnist(name)` builds the PyTorch twin of a
Fashion-MNIST preset (`vgg16-fmnist`, `resnet-fmnist`): module for module
the preset's architecture, so a state dict trained here imports into that
preset exactly (benchmarks/peer.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512,
             "M", 512, 512, 512, "M"]  # fmt: skip


class TorchVGG(nn.Module):
  """torchvision.models.VGG's layout: features, avgpool, classifier."""

  def __init__(self, cfg, batch_norm, fc, classes, in_ch, side,
               dropout=0.5):  # fmt: skip
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
      nn.Linear(c * side * side, fc[0]), nn.ReLU(True), nn.Dropout(dropout),
      nn.Linear(fc[0], fc[1]), nn.ReLU(True), nn.Dropout(dropout),
      nn.Linear(fc[1], classes),
    )  # fmt: skip

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


class TorchBottleneck(nn.Module):
  """torchvision's Bottleneck. `stride_in`: "conv2" (torchvision, the 3x3)
  or "conv1" (Caffe's and the paper's ResNet-50, the first 1x1)."""

  def __init__(self, cin, wa, wb, cout, stride, projection,
               stride_in="conv2"):  # fmt: skip
    super().__init__()
    s1, s2 = (stride, 1) if stride_in == "conv1" else (1, stride)
    self.conv1 = nn.Conv2d(cin, wa, 1, s1, bias=False)
    self.bn1 = nn.BatchNorm2d(wa)
    self.conv2 = nn.Conv2d(wa, wb, 3, s2, padding=1, bias=False)
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
  """torchvision.models.ResNet's layout with bottlenecks.

  stem: "imagenet" (7x7 stride-2 conv, 3x3 stride-2 max pool) or
  "small_pool" (3x3 conv, 2x2 max pool: the `resnet-fmnist` preset's).
  """

  def __init__(self, sizes, inner, out, stem, classes, in_ch,
               stem_kind="imagenet", stride_in="conv2"):  # fmt: skip
    super().__init__()
    if stem_kind == "imagenet":
      self.conv1 = nn.Conv2d(in_ch, stem, 7, 2, padding=3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, padding=1)
    else:
      self.conv1 = nn.Conv2d(in_ch, stem, 3, 1, padding=1, bias=False)
      self.maxpool = nn.MaxPool2d(2, 2)
    self.bn1 = nn.BatchNorm2d(stem)
    self.relu = nn.ReLU(inplace=True)
    cin = stem
    for s, (n, w, c) in enumerate(zip(sizes, inner, out, strict=True)):
      blocks = []
      for b in range(n):
        stride = 2 if (b == 0 and s > 0) else 1
        blocks.append(TorchBottleneck(cin, w, w, c, stride, b == 0, stride_in))
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


def fmnist(name: str) -> nn.Module:
  """The PyTorch twin of a Fashion-MNIST preset, freshly initialised:
  "vgg16-fmnist" (VGG-16-BN at 1/4 width, fc 128-128, dropout 0.3, 1x1 map
  after pool5 at 32x32) or "resnet-fmnist" (stages of 1, 2, 2, 1
  bottlenecks, Caffe stride placement, 3x3 stem and a 2x2 max pool)."""
  if name == "vgg16-fmnist":
    cfg = [v if v == "M" else v // 4 for v in VGG16_CFG]
    return TorchVGG(cfg, True, (128, 128), 10, 1, side=1, dropout=0.3)
  if name == "resnet-fmnist":
    return TorchResNet((1, 2, 2, 1), (16, 32, 64, 128), (64, 128, 256, 512),
                       16, 10, 1, stem_kind="small_pool",
                       stride_in="conv1")  # fmt: skip
  raise ValueError(
    f"no PyTorch twin of {name!r}; use 'vgg16-fmnist' or 'resnet-fmnist'"
  )


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
