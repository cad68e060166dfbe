"""Plain-NumPy forward passes of the model families, written from the papers.

Independent of Flax: convolution by explicit im2col in float64, BatchNorm in
eval mode, max pooling with -inf padding. Tests compare the Flax models and
their captured activations against these.
"""

from __future__ import annotations

import numpy as np


def conv(x, kernel, stride=1, bias=None):
  """x: [B, H, W, C], kernel: HWIO [k, k, C, D], pad k//2 -> [B, Ho, Wo, D]."""
  k = kernel.shape[0]
  p = k // 2
  b, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
  out = np.zeros((b, ho, wo, kernel.shape[3]))
  for i in range(ho):
    for j in range(wo):
      patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
      out[:, i, j, :] = np.einsum("bhwc,hwcd->bd", patch, kernel)
  return out if bias is None else out + bias


def batch_norm(x, bn_params, bn_stats, eps=1e-5):
  return (x - bn_stats["mean"]) / np.sqrt(bn_stats["var"] + eps) * bn_params[
    "scale"
  ] + bn_params["bias"]


def max_pool(x, window, stride, pad=0):
  b, h, w, c = x.shape
  xp = np.pad(
    x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf
  )
  ho, wo = (
    (h + 2 * pad - window) // stride + 1,
    (w + 2 * pad - window) // stride + 1,
  )
  out = np.empty((b, ho, wo, c))
  for i in range(ho):
    for j in range(wo):
      out[:, i, j] = xp[
        :, i * stride : i * stride + window, j * stride : j * stride + window
      ].max(axis=(1, 2))
  return out


def relu(x):
  return np.maximum(x, 0.0)


def _conv_bn(x, params, stats, name, bn_name, stride=1, act=True, out=None):
  y = conv(x, params[name]["kernel"], stride, params[name].get("bias"))
  if bn_name in params:
    y = batch_norm(y, params[bn_name], stats[bn_name])
  if not act:
    return y
  y = relu(y)
  if out is not None:
    out[name] = y
  return y


def vgg(spec, variables, x):
  """(logits, {consumer path: input}, {producer path: post-ReLU output})."""
  params = _np(variables["params"])
  stats = _np(variables.get("batch_stats", {}))
  captured, produced = {}, {}
  names = iter(spec.vgg_conv_names())
  first = True
  for item in spec.layers:
    if item == "M":
      x = max_pool(x, 2, 2)
      continue
    name = next(names)
    if not first:
      captured[name] = x
    first = False
    x = _conv_bn(x, params, stats, name, "bn" + name[4:], out=produced)
  if spec.head == "gap":
    captured["fc"] = x
    return _dense(x.mean(axis=(1, 2)), params["fc"]), captured, produced
  captured["fc6"] = x
  x = x.reshape(len(x), -1)
  for i in range(len(spec.fc_widths)):
    x = relu(_dense(x, params[f"fc{6 + i}"]))
  logits = _dense(x, params[f"fc{6 + len(spec.fc_widths)}"])
  return logits, captured, produced


def resnet(spec, variables, x):
  """(logits, {consumer path: input}, {producer path: post-ReLU output})."""
  params = _np(variables["params"])
  stats = _np(variables.get("batch_stats", {}))
  captured, produced = {}, {}
  if spec.stem == "imagenet":
    x = _conv_bn(x, params, stats, "conv1", "bn_conv1", 2, out=produced)
    x = max_pool(x, 3, 2, pad=1)
  else:
    x = _conv_bn(x, params, stats, "conv1", "bn_conv1", out=produced)
    if spec.stem == "small_pool":
      x = max_pool(x, 2, 2)
  names = iter(spec.resnet_block_names())
  for stage, n in enumerate(spec.stage_sizes):
    for b in range(n):
      block = next(names)
      p, s = params[block], stats.get(block, {})
      stride = 2 if (b == 0 and stage > 0) else 1
      sa, sb = (stride, 1) if spec.stride_placement == "caffe" else (1, stride)
      y = _conv_bn(x, p, s, "branch2a", "bn_branch2a", sa)
      captured[f"{block}/branch2b"] = produced[f"{block}/branch2a"] = y
      y = _conv_bn(y, p, s, "branch2b", "bn_branch2b", sb)
      captured[f"{block}/branch2c"] = produced[f"{block}/branch2b"] = y
      y = _conv_bn(y, p, s, "branch2c", "bn_branch2c", act=False)
      if b == 0:
        x = _conv_bn(x, p, s, "branch1", "bn_branch1", stride, act=False)
      x = relu(x + y)
  return _dense(x.mean(axis=(1, 2)), params["fc"]), captured, produced


def _dense(x, p):
  return x @ p["kernel"] + p["bias"]


def _np(tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {k: _np(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)


def conv_rows(x, kernel, stride, pads):
  """Every sample's contribution row xhat[(b, p, d), :], by explicit loops."""
  (pt, pb), (pl, pr) = pads
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  kh, kw, c, d = kernel.shape
  ho = (xp.shape[1] - kh) // stride + 1
  wo = (xp.shape[2] - kw) // stride + 1
  rows = []
  for b in range(x.shape[0]):
    for i in range(ho):
      for j in range(wo):
        patch = xp[
          b, i * stride : i * stride + kh, j * stride : j * stride + kw
        ]
        for o in range(d):
          rows.append(np.einsum("uvc,uvc->c", patch, kernel[..., o]))
  return np.array(rows)
