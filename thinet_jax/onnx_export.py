"""ONNX export of any (pruned) model, written from its spec.

Serving stacks run ONNX. Our models are a handful of layer kinds, so the
graph is built node by node from the `ModelSpec` with `onnx.helper`, not
traced: every node carries the layer's name (`conv3_1`, `res2a/branch2b`),
BatchNorm is folded into the convolution before it (eval mode, exact up
to rounding), dropout is gone, and the graph has a symbolic batch size.
(Tracing with `jax2onnx` would pull an older orbax-checkpoint than this
library needs, plus equinox and huggingface_hub; `jax.export`'s StableHLO
has no maintained converter to ONNX.)

ONNX convolutions are NCHW: by default the graph takes images
[B, C, S, S]; `input_layout="nhwc"` adds a leading Transpose so it takes
this library's [B, S, S, C]. Flattening before a VGG's first dense layer
follows the graph's NCHW order, so that layer's rows are permuted from our
NHWC order at export.

Example:

  >>> proto = onnx_export.to_onnx(spec, variables, image_size=32)
  >>> open("model.onnx", "wb").write(proto.SerializeToString())
  >>> import onnxruntime
  >>> session = onnxruntime.InferenceSession("model.onnx")
  >>> logits = session.run(None, {"images": images_nchw})[0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thinet_jax.spec import POOL, ModelSpec

BN_EPSILON = 1e-5  # models.common.conv_bn's


class _Graph:
  """Nodes and initializers, named after the model's layers."""

  def __init__(self):
    self.nodes: list = []
    self.inits: list = []

  def const(self, name: str, value) -> str:
    from onnx import numpy_helper

    self.inits.append(
      numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)
    )
    return name

  def op(self, kind: str, inputs: list[str], name: str, **attrs) -> str:
    from onnx import helper

    self.nodes.append(helper.make_node(kind, inputs, [name], name, **attrs))
    return name


def _np(tree):
  return {k: _np(v) if isinstance(v, dict) else np.asarray(v, np.float64)
          for k, v in tree.items()}  # fmt: skip


def _conv(g, x, params, stats, path, bn_path, k, stride, relu):
  """Conv (+ folded BatchNorm) (+ ReLU)."""
  conv = _get(params, path)
  w = conv["kernel"]  # HWIO
  b = conv.get("bias", np.zeros(w.shape[-1]))
  if bn_path is not None and _has(params, bn_path):
    bn, st = _get(params, bn_path), _get(stats, bn_path)
    scale = bn["scale"] / np.sqrt(st["var"] + BN_EPSILON)
    w = w * scale
    b = (b - st["mean"]) * scale + bn["bias"]
  pad = k // 2
  y = g.op(
    "Conv", [x, g.const(f"{path}/W", w.transpose(3, 2, 0, 1)),
             g.const(f"{path}/B", b)], path,
    kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
  )  # fmt: skip
  return g.op("Relu", [y], f"{path}/relu") if relu else y


def _get(tree, path):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _has(tree, path):
  try:
    _get(tree, path)
    return True
  except KeyError:
    return False


def _dense(g, x, params, name, relu, kernel=None):
  p = params[name]
  w = p["kernel"] if kernel is None else kernel
  y = g.op("Gemm", [x, g.const(f"{name}/W", w), g.const(f"{name}/B",
           p["bias"])], name)  # fmt: skip
  return g.op("Relu", [y], f"{name}/relu") if relu else y


def _vgg(g, x, spec, params, stats, image_size):
  names = iter(spec.vgg_conv_names())
  side, width = image_size, spec.in_channels
  for i, item in enumerate(spec.layers):
    if item == POOL:
      x = g.op("MaxPool", [x], f"pool{i}", kernel_shape=[2, 2],
               strides=[2, 2])  # fmt: skip
      side //= 2
      continue
    name = next(names)
    x = _conv(g, x, params, stats, name, "bn" + name[len("conv") :], 3, 1,
              True)  # fmt: skip
    width = item
  if spec.head == "gap":
    x = g.op("GlobalAveragePool", [x], "gap")
    x = g.op("Flatten", [x], "flatten")
    return _dense(g, x, params, "fc", relu=False)
  x = g.op("Flatten", [x], "flatten")  # NCHW order: (c, h, w)
  first = params["fc6"]["kernel"]  # rows in our (h, w, c) order
  d = first.shape[-1]
  first = first.reshape(side, side, width, d).transpose(2, 0, 1, 3)
  names = [f"fc{6 + i}" for i in range(len(spec.fc_widths) + 1)]
  for i, name in enumerate(names):
    x = _dense(g, x, params, name, relu=i < len(names) - 1,
               kernel=first.reshape(-1, d) if i == 0 else None)  # fmt: skip
  return x


def _resnet(g, x, spec, params, stats):
  if spec.stem == "imagenet":
    x = _conv(g, x, params, stats, "conv1", "bn_conv1", 7, 2, True)
    x = g.op("MaxPool", [x], "pool1", kernel_shape=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1])  # fmt: skip
  else:
    x = _conv(g, x, params, stats, "conv1", "bn_conv1", 3, 1, True)
    if spec.stem == "small_pool":
      x = g.op("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
  names = iter(spec.resnet_block_names())
  caffe = spec.stride_placement == "caffe"
  for stage, n in enumerate(spec.stage_sizes):
    for b in range(n):
      block = next(names)
      stride = 2 if (b == 0 and stage > 0) else 1
      sa, sb = (stride, 1) if caffe else (1, stride)

      def conv(inp, branch, k, s, relu, block=block):
        return _conv(g, inp, params, stats, f"{block}/{branch}",
                     f"{block}/bn_{branch}", k, s, relu)  # fmt: skip

      y = conv(x, "branch2a", 1, sa, True)
      y = conv(y, "branch2b", 3, sb, True)
      y = conv(y, "branch2c", 1, 1, False)
      shortcut = conv(x, "branch1", 1, stride, False) if b == 0 else x
      x = g.op("Add", [y, shortcut], f"{block}/add")
      x = g.op("Relu", [x], f"{block}/relu")
  x = g.op("GlobalAveragePool", [x], "gap")
  x = g.op("Flatten", [x], "flatten")
  return _dense(g, x, params, "fc", relu=False)


def to_onnx(
  spec: ModelSpec,
  variables: dict[str, Any],
  image_size: int,
  *,
  input_layout: str = "nchw",
  opset: int = 17,
):
  """An `onnx.ModelProto` of the eval-mode model: "images" -> "logits".

  Args:
    spec, variables: the (pruned) model.
    image_size: S of the inputs (VGG's flatten head needs it).
    input_layout: "nchw" (images [B, C, S, S], ONNX's convention) or
      "nhwc" (this library's [B, S, S, C], through a Transpose).
    opset: the ONNX opset to declare (every op used exists since 13).
  """
  from onnx import TensorProto, checker, helper

  if input_layout not in ("nchw", "nhwc"):
    raise ValueError(
      f'input_layout must be "nchw" or "nhwc", got {input_layout!r}'
    )
  params = _np(variables["params"])
  stats = _np(variables.get("batch_stats", {}))
  g = _Graph()
  c, s = spec.in_channels, image_size
  shape = ["batch", c, s, s] if input_layout == "nchw" else ["batch", s, s, c]
  x = "images"
  if input_layout == "nhwc":
    x = g.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
  if spec.family == "vgg":
    x = _vgg(g, x, spec, params, stats, image_size)
  else:
    x = _resnet(g, x, spec, params, stats)
  g.nodes.append(helper.make_node("Identity", [x], ["logits"], "logits"))
  graph = helper.make_graph(
    g.nodes, f"thinet_jax_{spec.family}",
    [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                   ["batch", spec.num_classes])],
    g.inits,
  )  # fmt: skip
  model = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", opset)],
    producer_name="thinet_jax",
  )  # fmt: skip
  checker.check_model(model)
  return model
