"""ModelSpec: an immutable, JSON-serialisable description of a CNN's widths.

Pruning changes widths, never layer types, so a model is fully described by
its family and a handful of width tuples. `models.build(spec)` turns a spec
into a Flax Linen module; a checkpoint stores the spec's JSON beside the
variables, so any pruned model restores into the right shapes.

Two families:

* `vgg`: `layers` is a sequence of 3x3 conv widths and "M" (2x2 max pool)
  markers, e.g. VGG-16 is (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
  512, 512, 512, "M", 512, 512, 512, "M"). Conv layers take the paper's names
  conv{stage}_{index}, the stage counting pools. Head `fc`: flatten, hidden
  dense layers of `fc_widths` (fc6, fc7, ...) with ReLU and dropout, then the
  classifier (fc8 for two hidden layers). Head `gap`: global average pooling
  and one dense layer `fc` (ThiNet-GAP, ThiNet-Tiny).
* `resnet`: bottleneck blocks res{stage+2}{letter} (Caffe names: res2a ..
  res5c), each with branch2a (1x1), branch2b (3x3), branch2c (1x1) and, in the
  first block of a stage, a projection shortcut branch1. `block_widths` holds
  (branch2a, branch2b) output widths per block, over all stages in order;
  `stage_widths` the block output (branch2c) width per stage.
  `stride_placement` puts a stage's downsampling stride in branch2a ("caffe",
  the original ResNet-50 that ThiNet pruned) or in branch2b ("torchvision").
  Stem `imagenet`: 7x7/2 conv + 3x3/2 max pool; `small`: 3x3/1 conv, for
  28x28 and 32x32 inputs.

Example:

  >>> spec = ModelSpec(family="vgg", layers=(16, "M", 32, "M"), head="gap",
  ...                  num_classes=10, in_channels=1, batch_norm=True)
  >>> ModelSpec.from_json(spec.to_json()) == spec
  True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

FAMILIES = ("vgg", "resnet")
POOL = "M"
STEMS = ("imagenet", "small", "small_pool")  # ResNet stems (ModelSpec.stem)

# Fields that only one family reads. A spec must leave the other family's
# fields at their defaults, so that a spec never carries silent, dead widths.
_VGG_FIELDS = ("layers", "head", "fc_widths", "dropout")
_RESNET_FIELDS = (
  "stem",
  "stem_width",
  "stage_sizes",
  "stage_widths",
  "block_widths",
  "stride_placement",
)


class SpecError(ValueError):
  """A ModelSpec field is invalid; the message names the field."""

  def __init__(self, field: str, message: str):
    super().__init__(f"ModelSpec.{field}: {message}")
    self.field = field


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Family and per-layer widths of a VGG or bottleneck-ResNet CNN.

  Attributes:
    family: "vgg" or "resnet".
    num_classes: classifier outputs.
    in_channels: input image channels (3 for RGB, 1 for Fashion-MNIST).
    batch_norm: BatchNorm after every conv (convs then have no bias).
    layers: (vgg) conv widths and "M" pool markers, in order.
    head: (vgg) "fc" (flatten + fc_widths hidden layers + classifier) or
      "gap" (global average pool + one dense layer).
    fc_widths: (vgg, head "fc") hidden dense widths, e.g. (4096, 4096).
    dropout: (vgg, head "fc") dropout rate after each hidden dense layer.
    stem: (resnet) "imagenet" (7x7/2 conv + 3x3/2 max pool), "small"
      (3x3/1 conv) or "small_pool" (3x3/1 conv + 2x2/2 max pool).
    stem_width: (resnet) output channels of the stem conv `conv1`.
    stage_sizes: (resnet) blocks per stage, e.g. (3, 4, 6, 3).
    stage_widths: (resnet) block output width per stage, e.g.
      (256, 512, 1024, 2048).
    block_widths: (resnet) (branch2a, branch2b) widths of every block, all
      stages in order; len == sum(stage_sizes).
    stride_placement: (resnet) "caffe" (stride in branch2a) or "torchvision"
      (stride in branch2b).
  """

  family: str
  num_classes: int = 1000
  in_channels: int = 3
  batch_norm: bool = False
  layers: tuple[int | str, ...] = ()
  head: str = "fc"
  fc_widths: tuple[int, ...] = ()
  dropout: float = 0.0
  stem: str = "imagenet"
  stem_width: int = 64
  stage_sizes: tuple[int, ...] = ()
  stage_widths: tuple[int, ...] = ()
  block_widths: tuple[tuple[int, int], ...] = ()
  stride_placement: str = "caffe"

  def __post_init__(self):
    # Normalise lists (from JSON or callers) to tuples so specs hash and
    # compare by value.
    for name in ("layers", "fc_widths", "stage_sizes", "stage_widths"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    object.__setattr__(
      self, "block_widths", tuple(tuple(b) for b in self.block_widths)
    )
    self._validate()

  # --- validation -------------------------------------------------------

  def _validate(self) -> None:
    if self.family not in FAMILIES:
      raise SpecError(
        "family", f"unknown family {self.family!r}; expected one of {FAMILIES}"
      )
    _positive_int("num_classes", self.num_classes)
    _positive_int("in_channels", self.in_channels)
    if not isinstance(self.batch_norm, bool):
      raise SpecError("batch_norm", f"must be a bool, got {self.batch_norm!r}")
    other = _RESNET_FIELDS if self.family == "vgg" else _VGG_FIELDS
    defaults = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    for name in other:
      if getattr(self, name) != defaults[name]:
        raise SpecError(
          name, f"is not used by family {self.family!r}; leave it unset"
        )
    if self.family == "vgg":
      self._validate_vgg()
    else:
      self._validate_resnet()

  def _validate_vgg(self) -> None:
    if not any(item != POOL for item in self.layers):
      raise SpecError("layers", "needs at least one conv width")
    for i, item in enumerate(self.layers):
      if item == POOL:
        continue
      _positive_int(f"layers[{i}]", item, hint=f' or the pool marker "{POOL}"')
    if self.head not in ("fc", "gap"):
      raise SpecError("head", f'must be "fc" or "gap", got {self.head!r}')
    for i, w in enumerate(self.fc_widths):
      _positive_int(f"fc_widths[{i}]", w)
    if self.head == "gap" and self.fc_widths:
      raise SpecError(
        "fc_widths", 'head "gap" has a single dense layer; leave it empty'
      )
    if not 0.0 <= self.dropout < 1.0:
      raise SpecError("dropout", f"must be in [0, 1), got {self.dropout}")

  def _validate_resnet(self) -> None:
    if self.stem not in STEMS:
      raise SpecError("stem", f"must be one of {STEMS}, got {self.stem!r}")
    _positive_int("stem_width", self.stem_width)
    if not self.stage_sizes:
      raise SpecError("stage_sizes", "needs at least one stage")
    for i, n in enumerate(self.stage_sizes):
      _positive_int(f"stage_sizes[{i}]", n)
    if len(self.stage_widths) != len(self.stage_sizes):
      raise SpecError(
        "stage_widths",
        f"has {len(self.stage_widths)} entries for "
        f"{len(self.stage_sizes)} stages",
      )
    for i, w in enumerate(self.stage_widths):
      _positive_int(f"stage_widths[{i}]", w)
    n_blocks = sum(self.stage_sizes)
    if len(self.block_widths) != n_blocks:
      raise SpecError(
        "block_widths",
        f"has {len(self.block_widths)} entries but stage_sizes "
        f"{self.stage_sizes} make {n_blocks} blocks",
      )
    for i, pair in enumerate(self.block_widths):
      if len(pair) != 2:
        raise SpecError(
          f"block_widths[{i}]",
          f"must be a (branch2a, branch2b) pair, got {pair!r}",
        )
      for j, w in enumerate(pair):
        _positive_int(f"block_widths[{i}][{j}]", w)
    if self.stride_placement not in ("caffe", "torchvision"):
      raise SpecError(
        "stride_placement",
        f'must be "caffe" or "torchvision", got {self.stride_placement!r}',
      )

  # --- JSON ---------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    """Plain dict of the fields this family uses (lists, not tuples)."""
    skip = _RESNET_FIELDS if self.family == "vgg" else _VGG_FIELDS
    out = {}
    for f in dataclasses.fields(self):
      if f.name in skip:
        continue
      value = getattr(self, f.name)
      if isinstance(value, tuple):
        value = [list(v) if isinstance(v, tuple) else v for v in value]
      out[f.name] = value
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
    """Inverse of `to_dict`; unknown keys are an error naming them."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise SpecError(
        unknown[0], f"unknown field; ModelSpec has {sorted(known)}"
      )
    if "family" not in d:
      raise SpecError("family", "is required")
    return cls(**d)

  def to_json(self, indent: int | None = 2) -> str:
    return json.dumps(self.to_dict(), indent=indent)

  @classmethod
  def from_json(cls, text: str) -> ModelSpec:
    return cls.from_dict(json.loads(text))

  def replace(self, **changes: Any) -> ModelSpec:
    """A copy with some fields changed (validated like any new spec)."""
    return dataclasses.replace(self, **changes)

  # --- derived views --------------------------------------------------------

  def skeleton(self) -> dict[str, Any]:
    """The spec with every prunable width blanked out: two specs with equal
    skeletons are the same architecture, perhaps pruned differently."""
    d = self.to_dict()
    if self.family == "vgg":
      d["layers"] = [POOL if item == POOL else 0 for item in self.layers]
    else:
      d["block_widths"] = [[0, 0]] * len(self.block_widths)
    return d

  def vgg_conv_names(self) -> list[str]:
    """Paper names of the VGG convs in order: conv1_1, conv1_2, conv2_1, ..."""
    names, stage, index = [], 1, 1
    for item in self.layers:
      if item == POOL:
        stage, index = stage + 1, 1
      else:
        names.append(f"conv{stage}_{index}")
        index += 1
    return names

  def resnet_block_names(self) -> list[str]:
    """Caffe names of the bottleneck blocks: res2a, res2b, ..., res5c.

    Stages of more than 26 blocks use Caffe's res4a, res4b1, res4b2, ...
    """
    names = []
    for s, n in enumerate(self.stage_sizes):
      for b in range(n):
        if n <= 26:
          suffix = chr(ord("a") + b)
        else:
          suffix = "a" if b == 0 else f"b{b}"
        names.append(f"res{s + 2}{suffix}")
    return names

  def stage_ends(self) -> set[str]:
    """Names of the groups that end a stage, where the paper fine-tunes
    longer: a VGG's last conv before a pool (and its last conv), a
    ResNet's branch2b of a stage's last block."""
    if self.family == "vgg":
      names = iter(self.vgg_conv_names())
      ends, last = set(), None
      for item in self.layers:
        if item == POOL:
          ends.add(last)
        else:
          last = next(names)
      return ends | {last}
    blocks = self.resnet_block_names()
    ends, i = set(), 0
    for n in self.stage_sizes:
      i += n
      ends.add(f"{blocks[i - 1]}/branch2b")
    return ends


def _positive_int(field: str, value: Any, hint: str = "") -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise SpecError(field, f"must be a positive int{hint}, got {value!r}")
