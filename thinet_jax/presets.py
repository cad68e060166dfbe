"""Named specs: the paper's architectures and small CPU-sized variants.

ImageNet presets (224x224 inputs, 1000 classes), as the paper (Luo, Wu, Lin,
ICCV 2017, Tables 3-5) and its official Caffe models define them:

* `vgg16`: VGG-16 (no BatchNorm), fc6/fc7 4096 wide, dropout 0.5.
* `thinet-conv`: conv1_1 .. conv4_3 at half width; conv5 and fc6-8 unchanged.
* `thinet-gap`: thinet-conv's convs, pool5 dropped, global average pooling
  over conv5_3's 14x14 map, one dense layer.
* `thinet-tiny`: the official ThiNet-Tiny widths (16 .. 128, conv5_3 256),
  GAP head.
* `resnet50`: ResNet-50 with Caffe stride placement (stride in branch2a), the
  model the paper pruned; `resnet50-torchvision` places it in branch2b.
* `thinet-70`, `thinet-50`, `thinet-30`: ResNet-50 with branch2a and
  branch2b of every block at int(C * r) channels, r = 0.7, 0.5, 0.3.

CPU-sized presets for Fashion-MNIST (28x28 padded to 32x32, 10 classes):

* `vgg16-fmnist`: VGG-16 with BatchNorm at 1/4 width; after five pools the
  map is 1x1, so fc6 sees 128 features (the CIFAR VGG geometry).
* `resnet-fmnist`: a small bottleneck ResNet (3x3 stem conv and a 2x2 max
  pool, so the stages run at 16, 8, 4 and 2 pixels; stages of 1, 2, 2, 1
  blocks at 1/4 of ResNet-50's widths). Without the pool its training step
  is 5x slower on a 2-core CPU (1.63 s against 0.32 s at batch 128).
"""

from __future__ import annotations

from collections.abc import Callable

from thinet_jax.spec import POOL, ModelSpec

M = POOL


def _vgg_layers(widths: list[list[int]], final_pool: bool = True) -> tuple:
  layers: list[int | str] = []
  for i, stage in enumerate(widths):
    layers.extend(stage)
    if final_pool or i < len(widths) - 1:
      layers.append(M)
  return tuple(layers)


_VGG16 = [[64, 64], [128, 128], [256, 256, 256], [512] * 3, [512] * 3]
_THINET_CONV = [[32, 32], [64, 64], [128, 128, 128], [256] * 3, [512] * 3]
_THINET_TINY = [[16, 16], [32, 32], [64, 64, 64], [128] * 3, [128, 128, 256]]
_RESNET50_INNER = (64, 128, 256, 512)
_RESNET50_SIZES = (3, 4, 6, 3)
_RESNET50_OUT = (256, 512, 1024, 2048)


def _imagenet_vgg(widths, head="fc", final_pool=True) -> ModelSpec:
  return ModelSpec(
    family="vgg",
    layers=_vgg_layers(widths, final_pool),
    head=head,
    fc_widths=(4096, 4096) if head == "fc" else (),
    dropout=0.5 if head == "fc" else 0.0,
    batch_norm=False,
    num_classes=1000,
    in_channels=3,
  )


def resnet_thinet(
  ratio: float = 1.0,
  *,
  stage_sizes=_RESNET50_SIZES,
  inner=_RESNET50_INNER,
  out=_RESNET50_OUT,
  stem: str = "imagenet",
  stem_width: int = 64,
  stride_placement: str = "caffe",
  num_classes: int = 1000,
  in_channels: int = 3,
) -> ModelSpec:
  """Bottleneck ResNet with branch2a/2b of every block at int(C * ratio).

  ratio 1.0 with the defaults is ResNet-50; 0.7 / 0.5 / 0.3 are the paper's
  ThiNet-70 / 50 / 30 (Table 5): the keep count follows the official code,
  int(C * ratio), at least 1.
  """
  blocks = []
  for n, c in zip(stage_sizes, inner, strict=True):
    kept = max(1, int(c * ratio))
    blocks += [(kept, kept)] * n
  return ModelSpec(
    family="resnet",
    stem=stem,
    stem_width=stem_width,
    stage_sizes=tuple(stage_sizes),
    stage_widths=tuple(out),
    block_widths=tuple(blocks),
    stride_placement=stride_placement,
    batch_norm=True,
    num_classes=num_classes,
    in_channels=in_channels,
  )


def _resnet_fmnist() -> ModelSpec:
  return resnet_thinet(
    1.0,
    stage_sizes=(1, 2, 2, 1),
    inner=(16, 32, 64, 128),
    out=(64, 128, 256, 512),
    stem="small_pool",
    stem_width=16,
    num_classes=10,
    in_channels=1,
  )


def _vgg16_fmnist() -> ModelSpec:
  return ModelSpec(
    family="vgg",
    layers=_vgg_layers([[w // 4 for w in stage] for stage in _VGG16]),
    head="fc",
    fc_widths=(128, 128),
    dropout=0.3,
    batch_norm=True,
    num_classes=10,
    in_channels=1,
  )


_PRESETS: dict[str, Callable[[], ModelSpec]] = {
  "vgg16": lambda: _imagenet_vgg(_VGG16),
  "thinet-conv": lambda: _imagenet_vgg(_THINET_CONV),
  "thinet-gap": lambda: _imagenet_vgg(_THINET_CONV, "gap", final_pool=False),
  "thinet-tiny": lambda: _imagenet_vgg(_THINET_TINY, "gap", final_pool=False),
  "resnet50": lambda: resnet_thinet(1.0),
  "resnet50-torchvision": lambda: resnet_thinet(
    1.0, stride_placement="torchvision"
  ),
  "thinet-70": lambda: resnet_thinet(0.7),
  "thinet-50": lambda: resnet_thinet(0.5),
  "thinet-30": lambda: resnet_thinet(0.3),
  "vgg16-fmnist": _vgg16_fmnist,
  "resnet-fmnist": _resnet_fmnist,
}

# Input size each preset is meant for.
IMAGE_SIZE = {name: 224 for name in _PRESETS} | {
  "vgg16-fmnist": 32,
  "resnet-fmnist": 32,
}


def names() -> list[str]:
  """All preset names."""
  return list(_PRESETS)


def get(name: str) -> ModelSpec:
  """The spec of a named preset; unknown names list the known ones."""
  try:
    return _PRESETS[name]()
  except KeyError:
    raise KeyError(
      f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}"
    ) from None
