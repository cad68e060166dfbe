"""Pretrained weights from PyTorch and Keras files, as a spec and variables.

Nobody prunes a random network: users arrive with torchvision's or Keras's
ImageNet weights. These converters read them into this library's layout:

* `from_torchvision(path_or_state_dict, arch)`: a state dict in
  torchvision's naming (`features.0.weight`, `layer1.0.conv1.weight`, ...)
  for VGG-16 (`"vgg16"`), VGG-16-BN (`"vgg16_bn"`) or ResNet-50
  (`"resnet50"`, torchvision's stride-in-3x3 variant). A `.safetensors`
  file is read without torch; a `.pth` / `.pt` file needs torch and is
  loaded with `torch.load(..., weights_only=True)` only: a pickle can run
  arbitrary code, and plain unpickling of a file from the internet is
  never safe.
* `from_keras(path, arch)`: a Keras applications weights file (`.h5`, the
  Keras 2 layout `keras.applications` downloads) for VGG16 (`"vgg16"`) or
  ResNet50 (`"resnet50"`, stride in the first 1x1 conv like Caffe's), read
  with h5py.

`arch` may also be a `ModelSpec` of the same layout (other widths, depths,
class counts), which the tests use for small models. Layouts converted:
conv kernels OIHW -> HWIO; dense [out, in] -> [in, out]; torchvision VGG's
first classifier layer flattens NCHW (c, h, w) where ours flattens NHWC
(h, w, c), so its rows are permuted; BatchNorm weight / bias / running
statistics -> scale / bias / mean / var; a conv bias in front of a
BatchNorm (torchvision VGG-BN, Keras ResNet50) is folded into the running
mean (BN(conv + b) with mean m equals BN(conv) with mean m - b), and Keras's
BatchNorm epsilon 1.001e-5 into the variance (ours is 1e-5). The result is
exact up to float rounding.

Every tensor the architecture expects is checked before anything is
converted; the first one that is missing or has another shape raises an
`InteropError` naming it and both shapes.

Preprocessing must match the source: torchvision models expect RGB scaled
to [0, 1] and normalised by the ImageNet mean and std; Keras VGG16 and
ResNet50 (Caffe's convention) expect BGR in [0, 255] minus the ImageNet
mean, unscaled: `config.preprocessing = "torchvision"` or `"caffe"`
(`thinet_jax.data.PREPROCESSING`); `SOURCE_PREPROCESSING` names each
converter's.

Example:

  >>> spec, variables = interop.from_torchvision("vgg16.safetensors", "vgg16")
  >>> logits = models.build(spec).apply(variables, images)  # NHWC
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from thinet_jax import checks, presets
from thinet_jax.spec import POOL, ModelSpec
from thinet_jax.weight_files import (  # noqa: F401 (interop's public names)
  InteropError,
  read_keras_h5,
  read_state_dict,
)

# Converter -> the `data.PREPROCESSING` its models expect.
SOURCE_PREPROCESSING = {"torchvision": "torchvision", "keras": "caffe"}
KERAS_BN_EPSILON = 1.001e-5
OUR_BN_EPSILON = 1e-5


# --- specs of the sources' architectures ----------------------------------


def torchvision_spec(arch: str | ModelSpec) -> ModelSpec:
  """The spec of a torchvision architecture name (or a spec, checked)."""
  if isinstance(arch, ModelSpec):
    return arch
  if arch == "vgg16":
    return presets.get("vgg16")
  if arch == "vgg16_bn":
    return dataclasses.replace(presets.get("vgg16"), batch_norm=True)
  if arch == "resnet50":
    return presets.get("resnet50-torchvision")
  raise ValueError(
    f"unknown torchvision architecture {arch!r}; use 'vgg16', 'vgg16_bn', "
    "'resnet50' or pass a ModelSpec"
  )


def keras_spec(arch: str | ModelSpec) -> ModelSpec:
  """The spec of a Keras applications name (or a spec, checked)."""
  if isinstance(arch, ModelSpec):
    return arch
  if arch == "vgg16":
    return presets.get("vgg16")
  if arch == "resnet50":
    return presets.get("resnet50")  # Stride in the first 1x1, like Caffe.
  raise ValueError(
    f"unknown Keras architecture {arch!r}; use 'vgg16', 'resnet50' or pass "
    "a ModelSpec"
  )


# --- conversion ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One source tensor: where it goes and how its layout changes."""

  source: str  # Source name, e.g. "features.0.weight".
  shape: tuple[int, ...]  # Its shape in the source.
  target: str  # "params/conv1_1/kernel", "batch_stats/bn1_1/mean", ...
  convert: Callable[[np.ndarray], np.ndarray]


def _oihw(w):
  return np.transpose(w, (2, 3, 1, 0))


def _dense(w):
  return np.transpose(w)


def _same(w):
  return w


def _conv_tensors(src_conv, src_bn, ours, ours_bn, cin, cout, k, bn, torch,
                  conv_bias):  # fmt: skip
  """Tensors of a conv (+ BN): torch names `<src>.weight` / `.bias` /
  `.running_mean` ..., Keras names `<src>/kernel` ... (BN in `src_bn`)."""
  if torch:
    kernel = _Tensor(f"{src_conv}.weight", (cout, cin, k, k),
                     f"params/{ours}/kernel", _oihw)  # fmt: skip
    bias_name = f"{src_conv}.bias"
    bn_names = ("weight", "bias", "running_mean", "running_var")
    sep = "."
  else:
    kernel = _Tensor(f"{src_conv}/kernel", (k, k, cin, cout),
                     f"params/{ours}/kernel", _same)  # fmt: skip
    bias_name = f"{src_conv}/bias"
    bn_names = ("gamma", "beta", "moving_mean", "moving_variance")
    sep = "/"
  out = [kernel]
  if not bn:
    return out + [_Tensor(bias_name, (cout,), f"params/{ours}/bias", _same)]
  targets = ("params/{}/scale", "params/{}/bias", "batch_stats/{}/mean",
             "batch_stats/{}/var")  # fmt: skip
  out += [
    _Tensor(f"{src_bn}{sep}{n}", (cout,), t.format(ours_bn), _same)
    for n, t in zip(bn_names, targets, strict=True)
  ]
  if conv_bias:  # Folded into the running mean afterwards.
    out.append(_Tensor(bias_name, (cout,), f"fold/{ours_bn}/mean", _same))
  return out


def _vgg_tensors(spec: ModelSpec, image_size: int, torch: bool) -> list:
  if spec.family != "vgg" or spec.head != "fc":
    raise ValueError(
      "VGG weights convert to a VGG spec with the fc head; got "
      f"family={spec.family!r}, head={spec.head!r}"
    )
  out, cin, index = [], spec.in_channels, 0
  convs = iter(spec.vgg_conv_names())
  pools = 0
  for item in spec.layers:
    if item == POOL:
      index += 1 if torch else 0
      pools += 1
      continue
    name = next(convs)
    bn_name = "bn" + name[len("conv") :]
    if torch:
      src, src_bn = f"features.{index}", f"features.{index + 1}"
      index += 3 if spec.batch_norm else 2
    else:  # Keras: block{stage}_conv{i}.
      stage, i = name[len("conv") :].split("_")
      src = src_bn = f"block{stage}_conv{i}"
    out += _conv_tensors(src, src_bn, name, bn_name, cin, item, 3,
                         spec.batch_norm, torch, conv_bias=torch)  # fmt: skip
    cin = item
  side = image_size // 2**pools
  widths = [*spec.fc_widths, spec.num_classes]
  fan_in = side * side * cin
  for i, width in enumerate(widths):
    ours = f"fc{6 + i}"
    if torch:
      src = f"classifier.{3 * i}"
      convert = _dense
      if i == 0:  # NCHW flatten (c, h, w) -> ours (h, w, c).
        convert = _nchw_rows(cin, side)
      out += [
        _Tensor(f"{src}.weight", (width, fan_in), f"params/{ours}/kernel",
                convert),
        _Tensor(f"{src}.bias", (width,), f"params/{ours}/bias", _same),
      ]  # fmt: skip
    else:
      src = ("fc1", "fc2")[i] if i < len(widths) - 1 else "predictions"
      out += [
        _Tensor(f"{src}/kernel", (fan_in, width), f"params/{ours}/kernel",
                _same),
        _Tensor(f"{src}/bias", (width,), f"params/{ours}/bias", _same),
      ]  # fmt: skip
    fan_in = width
  return out


def _nchw_rows(channels: int, side: int):
  def convert(w):  # [out, C * H * W] in (c, h, w) order
    out = w.shape[0]
    w = w.reshape(out, channels, side, side).transpose(2, 3, 1, 0)
    return w.reshape(side * side * channels, out)

  return convert


def _resnet_tensors(spec: ModelSpec, torch: bool) -> list:
  if spec.family != "resnet":
    raise ValueError(
      f"ResNet weights convert to a ResNet spec; got family={spec.family!r}"
    )
  out = []
  stem = 7 if spec.stem == "imagenet" else 3  # The small stems' 3x3 conv.
  if torch:
    out += _conv_tensors("conv1", "bn1", "conv1", "bn_conv1",
                         spec.in_channels, spec.stem_width, stem, True, True,
                         conv_bias=False)  # fmt: skip
  else:
    out += _conv_tensors("conv1_conv", "conv1_bn", "conv1", "bn_conv1",
                         spec.in_channels, spec.stem_width, stem, True, False,
                         conv_bias=True)  # fmt: skip
  names = iter(spec.resnet_block_names())
  widths = iter(spec.block_widths)
  cin = spec.stem_width
  for stage, (n, width) in enumerate(
    zip(spec.stage_sizes, spec.stage_widths, strict=True)
  ):
    for b in range(n):
      block, (wa, wb) = next(names), next(widths)
      layers = [
        ("branch2a", cin, wa, 1, 1), ("branch2b", wa, wb, 3, 2),
        ("branch2c", wb, width, 1, 3),
      ]  # fmt: skip
      if b == 0:
        layers.append(("branch1", cin, width, 1, 0))
      for ours, c_in, c_out, k, i in layers:
        if torch:
          prefix = f"layer{stage + 1}.{b}"
          if i == 0:
            src, src_bn = f"{prefix}.downsample.0", f"{prefix}.downsample.1"
          else:
            src, src_bn = f"{prefix}.conv{i}", f"{prefix}.bn{i}"
        else:
          prefix = f"conv{stage + 2}_block{b + 1}"
          src, src_bn = f"{prefix}_{i}_conv", f"{prefix}_{i}_bn"
        out += _conv_tensors(
          src, src_bn, f"{block}/{ours}", f"{block}/bn_{ours}", c_in, c_out,
          k, True, torch, conv_bias=not torch,
        )  # fmt: skip
      cin = width
  if torch:
    out += [
      _Tensor("fc.weight", (spec.num_classes, cin), "params/fc/kernel",
              _dense),
      _Tensor("fc.bias", (spec.num_classes,), "params/fc/bias", _same),
    ]  # fmt: skip
  else:
    out += [
      _Tensor("predictions/kernel", (cin, spec.num_classes),
              "params/fc/kernel", _same),
      _Tensor("predictions/bias", (spec.num_classes,), "params/fc/bias",
              _same),
    ]  # fmt: skip
  return out


def _convert(tensors: list[_Tensor], lookup: Callable[[str], Any],
             where: str, bn_epsilon: float) -> dict[str, Any]:  # fmt: skip
  """Checks every expected tensor, then converts them into variables."""
  arrays = {}
  for t in tensors:
    value = lookup(t.source)
    if value is None:
      raise InteropError(
        f"{where} has no tensor {t.source!r} (expected shape {t.shape}); "
        "is it the right architecture and naming?"
      )
    if tuple(value.shape) != t.shape:
      raise InteropError(
        f"{where}: tensor {t.source!r} has shape {tuple(value.shape)}, the "
        f"architecture expects {t.shape}"
      )
    arrays[t.target] = t.convert(np.asarray(value, np.float32))
  flat = {}
  for target, value in arrays.items():
    if target.startswith("fold/"):
      continue
    flat[target] = value
  for target, bias in arrays.items():
    if target.startswith("fold/"):  # BN(conv + b, mean m) = BN(conv, m - b)
      mean = "batch_stats/" + target[len("fold/") :]
      flat[mean] = flat[mean] - bias
  if bn_epsilon != OUR_BN_EPSILON:  # var + eps_source = var' + eps_ours
    for target in flat:
      if target.startswith("batch_stats/") and target.endswith("/var"):
        flat[target] = flat[target] + np.float32(bn_epsilon - OUR_BN_EPSILON)
  variables = _unflatten(flat)
  checks.check_finite(variables, where)
  return variables


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, value in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def _extra(source: Mapping[str, Any], used: set[str], where: str) -> None:
  extra = sorted(
    k for k in source if k not in used and not k.endswith("num_batches_tracked")
  )
  if extra:
    raise InteropError(
      f"{where} holds tensors this architecture does not have, first "
      f"{extra[0]!r} ({len(extra)} in all): is it the right architecture?"
    )


def from_torchvision(
  source: str | Mapping[str, Any],
  arch: str | ModelSpec = "resnet50",
  image_size: int = 224,
) -> tuple[ModelSpec, dict[str, Any]]:
  """A torchvision-named state dict as (spec, variables).

  Args:
    source: a `.safetensors` / `.pth` / `.pt` path, or a state dict (NumPy
      arrays or torch tensors).
    arch: "vgg16", "vgg16_bn", "resnet50", or a ModelSpec of that layout.
    image_size: the input size the VGG classifier was trained for (its
      first dense layer sees the map after the last pool; torchvision's
      adaptive pool makes that 7x7 only at 224).

  Raises:
    InteropError: a missing tensor, a tensor of another shape, or tensors
      the architecture does not have (the first one named).
  """
  spec = torchvision_spec(arch)
  where = source if isinstance(source, str) else "the state dict"
  state = read_state_dict(source) if isinstance(source, str) else source
  state = {k.removeprefix("module."): v for k, v in state.items()}
  if spec.family == "vgg":
    tensors = _vgg_tensors(spec, image_size, torch=True)
  else:
    tensors = _resnet_tensors(spec, torch=True)
  variables = _convert(
    tensors, lambda n: _numpy(state.get(n)), where, OUR_BN_EPSILON
  )
  _extra(state, {t.source for t in tensors}, where)
  return spec, variables


def _numpy(value):
  if value is None or isinstance(value, np.ndarray):
    return value
  if hasattr(value, "detach"):  # A torch tensor.
    return value.detach().cpu().numpy()
  return np.asarray(value)


def from_keras(
  path: str, arch: str | ModelSpec = "resnet50", image_size: int = 224
) -> tuple[ModelSpec, dict[str, Any]]:
  """A Keras applications weights file (`.h5`) as (spec, variables).

  Args:
    path: the `.h5` file (Keras 2 layout: layer groups with
      `weight_names`; a full saved model or weights only).
    arch: "vgg16", "resnet50", or a ModelSpec of that layout.
    image_size: as `from_torchvision` (VGG only).

  Raises:
    InteropError: as `from_torchvision`.
  """
  spec = keras_spec(arch)
  layers = read_keras_h5(path)
  if spec.family == "vgg":
    tensors = _vgg_tensors(spec, image_size, torch=False)
    epsilon = OUR_BN_EPSILON
  else:
    tensors = _resnet_tensors(spec, torch=False)
    epsilon = KERAS_BN_EPSILON

  def lookup(name):
    layer, _, weight = name.partition("/")
    return layers.get(layer, {}).get(weight)

  variables = _convert(tensors, lookup, path, epsilon)
  flat = {f"{layer}/{w}" for layer, ws in layers.items() for w in ws}
  _extra(flat, {t.source for t in tensors}, path)
  return spec, variables
