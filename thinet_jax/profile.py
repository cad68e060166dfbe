"""Parameters and FLOPs of a spec, per layer, computed analytically.

FLOPs count the multiply-adds of convolutions and dense layers, one
multiply-add = 2 FLOPs, as the paper does (VGG-16 at 224x224: 30.94 GFLOPs;
ResNet-50: 7.72 GFLOPs). Bias adds, BatchNorm, ReLU and pooling are not
counted; their parameters are. A conv's multiply-adds are counted over its
full kernel window at every output position, zero padding included (the
convention of the paper and of most profilers; XLA's own count skips the
padded taps, see tests/test_profile.py).

Example:

  >>> from thinet_jax import presets, profile
  >>> p = profile.count(presets.get("vgg16"), image_size=224)
  >>> p["params"], p["flops"]
  (138357544, 30940528640)
  >>> print(profile.format_table(p))
"""

from __future__ import annotations

from typing import Any

from thinet_jax.spec import POOL, ModelSpec


def _conv_out(size: int, kernel: int, stride: int) -> int:
  # Padding k // 2 on both sides, as the models use.
  return (size + 2 * (kernel // 2) - kernel) // stride + 1


class _Walker:
  """Accumulates one row per conv / BatchNorm / dense layer."""

  def __init__(self, spec: ModelSpec, image_size: int):
    self.spec = spec
    self.rows: list[dict[str, Any]] = []
    self.h = self.w = image_size
    self.c = spec.in_channels

  def conv(self, name: str, bn: str, width: int, kernel: int, stride: int = 1):
    h = _conv_out(self.h, kernel, stride)
    w = _conv_out(self.w, kernel, stride)
    if h < 1 or w < 1:
      raise ValueError(
        f"{name}: input {self.h}x{self.w} is too small for a {kernel}x"
        f"{kernel}/{stride} conv; use a larger image_size"
      )
    macs = kernel * kernel * self.c * width * h * w
    params = kernel * kernel * self.c * width
    if not self.spec.batch_norm:
      params += width  # bias
    self.rows.append(
      dict(
        name=name,
        kind="conv",
        input=(self.h, self.w, self.c),
        output=(h, w, width),
        kernel=(kernel, kernel, self.c, width),
        stride=stride,
        params=params,
        flops=2 * macs,
      )
    )
    if self.spec.batch_norm:
      self.rows.append(
        dict(
          name=bn,
          kind="batch_norm",
          input=(h, w, width),
          output=(h, w, width),
          kernel=(width,),
          stride=1,
          params=2 * width,
          flops=0,
        )
      )
    return h, w, width

  def pool(self, name: str, window: int, stride: int, pad: int):
    h = (self.h + 2 * pad - window) // stride + 1
    w = (self.w + 2 * pad - window) // stride + 1
    if h < 1 or w < 1:
      raise ValueError(
        f"{name}: input {self.h}x{self.w} is too small to pool; use a "
        "larger image_size"
      )
    self.h, self.w = h, w

  def dense(self, name: str, n_in: int, n_out: int):
    self.rows.append(
      dict(
        name=name,
        kind="dense",
        input=(n_in,),
        output=(n_out,),
        kernel=(n_in, n_out),
        stride=1,
        params=n_in * n_out + n_out,
        flops=2 * n_in * n_out,
      )
    )


def layers(spec: ModelSpec, image_size: int) -> list[dict[str, Any]]:
  """Per-layer rows: name (parameter path), kind, shapes, params, flops.

  Names are the Flax parameter paths ("conv3_1", "res2a/branch2b",
  "res2a/bn_branch2b", "fc6"). Shapes are (H, W, C) for convs and (F,) for
  dense layers; `kernel` is HWIO for convs and (in, out) for dense layers.
  """
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}")
  walk = _Walker(spec, image_size)
  if spec.family == "vgg":
    _walk_vgg(spec, walk)
  else:
    _walk_resnet(spec, walk)
  return walk.rows


def _walk_vgg(spec: ModelSpec, walk: _Walker) -> None:
  names = iter(spec.vgg_conv_names())
  stage = 1
  for item in spec.layers:
    if item == POOL:
      walk.pool(f"pool{stage}", 2, 2, 0)
      stage += 1
      continue
    name = next(names)
    walk.h, walk.w, walk.c = walk.conv(name, "bn" + name[4:], item, 3)
  if spec.head == "gap":
    walk.dense("fc", walk.c, spec.num_classes)
    return
  n_in = walk.h * walk.w * walk.c
  for i, width in enumerate(spec.fc_widths):
    walk.dense(f"fc{6 + i}", n_in, width)
    n_in = width
  walk.dense(f"fc{6 + len(spec.fc_widths)}", n_in, spec.num_classes)


def _walk_resnet(spec: ModelSpec, walk: _Walker) -> None:
  caffe = spec.stride_placement == "caffe"
  if spec.stem == "imagenet":
    walk.h, walk.w, walk.c = walk.conv(
      "conv1", "bn_conv1", spec.stem_width, 7, 2
    )
    walk.pool("pool1", 3, 2, 1)
  else:
    walk.h, walk.w, walk.c = walk.conv("conv1", "bn_conv1", spec.stem_width, 3)
    if spec.stem == "small_pool":
      walk.pool("pool1", 2, 2, 0)
  names = iter(spec.resnet_block_names())
  widths = iter(spec.block_widths)
  for stage, (n_blocks, out) in enumerate(
    zip(spec.stage_sizes, spec.stage_widths, strict=True)
  ):
    for b in range(n_blocks):
      block, (w2a, w2b) = next(names), next(widths)
      stride = 2 if (b == 0 and stage > 0) else 1
      s_a, s_b = (stride, 1) if caffe else (1, stride)
      block_in = (walk.h, walk.w, walk.c)

      def conv(branch, width, kernel, s, block=block):
        return walk.conv(
          f"{block}/{branch}", f"{block}/bn_{branch}", width, kernel, s
        )

      walk.h, walk.w, walk.c = conv("branch2a", w2a, 1, s_a)
      walk.h, walk.w, walk.c = conv("branch2b", w2b, 3, s_b)
      block_out = conv("branch2c", out, 1, 1)
      if b == 0:
        walk.h, walk.w, walk.c = block_in
        conv("branch1", out, 1, stride)
      walk.h, walk.w, walk.c = block_out
  walk.dense("fc", walk.c, spec.num_classes)


def count(spec: ModelSpec, image_size: int = 224) -> dict[str, Any]:
  """Params and FLOPs of `spec` at `image_size` x `image_size` inputs.

  Returns:
    {"params": trainable parameter count (the `params` collection),
     "batch_stats": BatchNorm running-statistic count,
     "flops": 2 * multiply-adds of convs and dense layers,
     "macs": multiply-adds, "conv_flops", "dense_flops",
     "image_size": int, "layers": `layers(spec, image_size)`}
  """
  rows = layers(spec, image_size)
  flops = sum(r["flops"] for r in rows)
  return {
    "params": sum(r["params"] for r in rows),
    "batch_stats": sum(r["params"] for r in rows if r["kind"] == "batch_norm"),
    "flops": flops,
    "macs": flops // 2,
    "conv_flops": sum(r["flops"] for r in rows if r["kind"] == "conv"),
    "dense_flops": sum(r["flops"] for r in rows if r["kind"] == "dense"),
    "image_size": image_size,
    "layers": rows,
  }


def human(n: float, unit: str = "") -> str:
  """1234567 -> '1.23M'."""
  for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
    if abs(n) >= scale:
      return f"{n / scale:.2f}{suffix}{unit}"
  return f"{n:g}{unit}"


def format_table(profile: dict[str, Any], batch_norm_rows: bool = False) -> str:
  """A fixed-width table of `count(...)`'s layers and totals."""
  rows = [
    r for r in profile["layers"] if batch_norm_rows or r["kind"] != "batch_norm"
  ]
  header = ("layer", "kernel", "output", "params", "FLOPs", "%FLOPs")
  total = max(profile["flops"], 1)
  body = [
    (
      r["name"],
      "x".join(map(str, r["kernel"]))
      + (f"/{r['stride']}" if r["stride"] > 1 else ""),
      "x".join(map(str, r["output"])),
      f"{r['params']:,}",
      human(r["flops"]),
      f"{100 * r['flops'] / total:.1f}",
    )
    for r in rows
  ]
  foot = (
    "total",
    "",
    f"{profile['image_size']}x{profile['image_size']} input",
    f"{profile['params']:,}",
    human(profile["flops"]),
    "100.0",
  )
  widths = [max(len(row[i]) for row in [header, *body, foot]) for i in range(6)]

  def line(row):
    left = row[0].ljust(widths[0])
    rest = [cell.rjust(widths[i + 1]) for i, cell in enumerate(row[1:])]
    return "  ".join([left, *rest])

  rule = "  ".join("-" * w for w in widths)
  return "\n".join([line(header), rule, *map(line, body), rule, line(foot)])
