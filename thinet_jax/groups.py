"""Prunable channel groups: a producer's output channels and their consumer.

A group is one set of channels that ThiNet removes together (paper section
3): the output channels of the producer conv (its kernel's out axis, its bias,
its BatchNorm scale/bias and running mean/var) and the matching input
channels of the consumer layer (a conv kernel's in axis, or the rows of a
dense kernel after flatten or global average pooling). The consumer is the
layer whose output ThiNet reconstructs. Each family states its groups from
its spec; nothing is found by position in a flat list of parameters.

* VGG: every conv; its consumer is the next conv, or for the last conv the
  first dense layer (fc6 after flatten, or fc after global pooling). The
  paper's choice (`paper_groups`) is conv1_1 .. conv4_3: every stage but the
  last.
* ResNet (paper section 4.2): in every bottleneck, branch2a (consumer
  branch2b) and then branch2b (consumer branch2c). branch2c and the shortcut
  are never pruned: the residual sum needs their widths equal.

Example:

  >>> [g.name for g in groups.groups(presets.get("resnet50"))][:3]
  ['res2a/branch2a', 'res2a/branch2b', 'res2b/branch2a']
"""

from __future__ import annotations

import dataclasses

from thinet_jax.spec import POOL, ModelSpec


@dataclasses.dataclass(frozen=True)
class Group:
  """One prunable set of channels, addressed by parameter path.

  Attributes:
    name: the producer's path, e.g. "conv3_1" or "res2a/branch2a".
    producer: path of the producer conv (params: kernel [kh, kw, Cin, C],
      bias [C] when there is no BatchNorm).
    producer_bn: path of its BatchNorm (params scale/bias [C], batch_stats
      mean/var [C]), or None.
    consumer: path of the consumer layer.
    consumer_kind: "conv" (kernel [kh, kw, C, D]), "flatten_dense" (kernel
      [H * W * C, D], rows in NHWC flatten order) or "gap_dense" (kernel
      [C, D] after global average pooling).
    consumer_stride: the consumer conv's stride (1 for dense consumers).
    width: C, the producer's current output width.
    spec_index: where the width lives in the spec: ("layers", i) for VGG,
      ("block_widths", block, 0 or 1) for ResNet.
    consumer_bn: path of the consumer's BatchNorm, or None when the
      consumer adds a bias instead (dense layers, convs without BN).
  """

  name: str
  producer: str
  producer_bn: str | None
  consumer: str
  consumer_kind: str
  consumer_stride: int
  width: int
  spec_index: tuple
  consumer_bn: str | None = None

  @property
  def param_leaves(self) -> list[str]:
    """Paths of every leaf this group touches ("collection/path/leaf")."""
    leaves = [f"params/{self.producer}/kernel"]
    if self.producer_bn is None:
      leaves.append(f"params/{self.producer}/bias")
    else:
      leaves += [
        f"params/{self.producer_bn}/scale",
        f"params/{self.producer_bn}/bias",
        f"batch_stats/{self.producer_bn}/mean",
        f"batch_stats/{self.producer_bn}/var",
      ]
    return leaves + [f"params/{self.consumer}/kernel"]


def groups(spec: ModelSpec) -> list[Group]:
  """Every prunable group of a spec, in network order."""
  if spec.family == "vgg":
    return _vgg_groups(spec)
  return _resnet_groups(spec)


def _vgg_groups(spec: ModelSpec) -> list[Group]:
  convs = spec.vgg_conv_names()
  positions = [i for i, item in enumerate(spec.layers) if item != POOL]
  last = "fc" if spec.head == "gap" else "fc6"
  kind = "gap_dense" if spec.head == "gap" else "flatten_dense"
  out = []
  for k, (name, pos) in enumerate(zip(convs, positions, strict=True)):
    is_last = k == len(convs) - 1
    consumer = last if is_last else convs[k + 1]
    out.append(
      Group(
        name=name,
        producer=name,
        producer_bn=("bn" + name[4:]) if spec.batch_norm else None,
        consumer=consumer,
        consumer_kind=kind if is_last else "conv",
        consumer_stride=1,
        width=spec.layers[pos],
        spec_index=("layers", pos),
        consumer_bn=(
          "bn" + consumer[4:] if spec.batch_norm and not is_last else None
        ),
      )
    )
  return out


def _resnet_groups(spec: ModelSpec) -> list[Group]:
  caffe = spec.stride_placement == "caffe"
  out = []
  blocks = spec.resnet_block_names()
  first_blocks = set()
  i = 0
  for n in spec.stage_sizes:
    first_blocks.add(i)
    i += n
  for b, block in enumerate(blocks):
    stride = 2 if (b in first_blocks and b > 0) else 1
    for j, (producer, consumer) in enumerate(
      (("branch2a", "branch2b"), ("branch2b", "branch2c"))
    ):
      consumer_stride = stride if (consumer == "branch2b" and not caffe) else 1
      out.append(
        Group(
          name=f"{block}/{producer}",
          producer=f"{block}/{producer}",
          producer_bn=f"{block}/bn_{producer}" if spec.batch_norm else None,
          consumer=f"{block}/{consumer}",
          consumer_kind="conv",
          consumer_stride=consumer_stride,
          width=spec.block_widths[b][j],
          spec_index=("block_widths", b, j),
          consumer_bn=f"{block}/bn_{consumer}" if spec.batch_norm else None,
        )
      )
  return out


def paper_groups(spec: ModelSpec) -> list[Group]:
  """The groups the paper prunes: VGG conv1_1 .. conv4_3 (every stage but
  the last; ThiNet-Conv leaves conv5 alone), ResNet every 2a and 2b."""
  all_groups = groups(spec)
  if spec.family == "resnet":
    return all_groups
  last_stage = spec.vgg_conv_names()[-1].split("_")[0]
  return [g for g in all_groups if not g.name.startswith(last_stage + "_")]


def get(spec: ModelSpec, name: str) -> Group:
  """The group whose producer is `name`; unknown names list the known."""
  for group in groups(spec):
    if group.name == name:
      return group
  known = ", ".join(g.name for g in groups(spec))
  raise KeyError(f"no prunable group {name!r} in this spec; groups: {known}")


def with_width(spec: ModelSpec, group: Group, width: int) -> ModelSpec:
  """The spec with `group`'s producer at `width` output channels."""
  if group.spec_index[0] == "layers":
    layers = list(spec.layers)
    layers[group.spec_index[1]] = width
    return spec.replace(layers=tuple(layers))
  _, b, j = group.spec_index
  blocks = [list(p) for p in spec.block_widths]
  blocks[b][j] = width
  return spec.replace(block_widths=tuple(tuple(p) for p in blocks))


def with_widths(spec: ModelSpec, widths: dict[str, int]) -> ModelSpec:
  """The spec with every named group at its width (group name -> width):
  the spec of a model the graph pruned to these widths."""
  for name, width in widths.items():
    spec = with_width(spec, get(spec, name), int(width))
  return spec
