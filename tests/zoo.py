"""Model definitions written as researchers write them (not from ModelSpec,
names of their own), for the dependency-graph tests.

Each entry of `ZOO` builds (apply_fn, variables, example input, expected)
where `expected` lists the prunable groups (name -> width) and the
left-out sets (name -> a phrase of the reason) that the graph must find:
the ground truth stated by hand from the architecture.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from thinet_jax.depgraph import surgery
from thinet_jax.depgraph.stats import collect as depgraph_collect
from thinet_jax.depgraph.stats import combine as depgraph_combine


class PlainCNN(nn.Module):
  """Conv-BN-ReLU x3, max pool, global average pooling head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, f in enumerate((8, 12, 16)):
      x = nn.Conv(f, (3, 3), use_bias=False, name=f"features_{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, name=f"norm_{i}")(x)
      x = nn.relu(x)
      if i == 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(5, name="classifier")(x)


ModuleDef = type[nn.Module]


class BottleneckResNetBlock(nn.Module):
  """As in flax/examples/imagenet/models.py."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (1, 1))(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3), self.strides)(y)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.ones)(y)
    if residual.shape != y.shape:
      residual = self.conv(
        self.filters * 4, (1, 1), self.strides, name="conv_proj"
      )(residual)
      residual = self.norm(name="norm_proj")(residual)
    return self.act(residual + y)


class ExamplesResNet(nn.Module):
  """flax-examples-style ResNet: stem, stages of bottlenecks, projection
  shortcuts, nested modules from partials."""

  stage_sizes: tuple = (2, 1)
  num_filters: int = 4
  num_classes: int = 5

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5
    )
    x = conv(self.num_filters, (3, 3), name="conv_init")(x)
    x = nn.relu(norm(name="bn_init")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = BottleneckResNetBlock(
          self.num_filters * 2**i,
          conv=conv,
          norm=norm,
          act=nn.relu,
          strides=strides,
        )(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


class PreActBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train):
    y = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    y = nn.Conv(self.features, (3, 3))(y)
    y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
    y = nn.Conv(x.shape[-1], (3, 3))(y)
    return x + y


class PreActResNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3), name="stem")(x)
    x = PreActBlock(5, name="block1")(x, train)
    x = PreActBlock(7, name="block2")(x, train)
    x = nn.relu(
      nn.BatchNorm(use_running_average=not train, name="final_norm")(x)
    )
    return nn.Dense(4, name="head")(jnp.mean(x, axis=(1, 2)))


class DenseBlock(nn.Module):
  """DenseNet-style: every layer reads the concatenation of all before."""

  growth: int = 4
  layers: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3), name="stem")(x)
    for i in range(self.layers):
      y = nn.relu(nn.BatchNorm(use_running_average=not train, name=f"bn{i}")(x))
      y = nn.Conv(self.growth, (3, 3), name=f"layer{i}")(y)
      x = jnp.concatenate([x, y], axis=-1)
    x = nn.Conv(8, (1, 1), name="transition")(nn.relu(x))
    return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


class InvertedResidual(nn.Module):
  """MobileNetV2 block written with setup(): expand 1x1, depthwise 3x3,
  project 1x1, residual when shapes match."""

  channels: int
  expansion: int = 4

  def setup(self):
    hidden = self.channels * self.expansion
    self.expand = nn.Conv(hidden, (1, 1), use_bias=False)
    self.bn1 = nn.BatchNorm(use_running_average=True)
    self.depthwise = nn.Conv(
      hidden, (3, 3), feature_group_count=hidden, use_bias=False
    )
    self.bn2 = nn.BatchNorm(use_running_average=True)
    self.project = nn.Conv(self.channels, (1, 1), use_bias=False)
    self.bn3 = nn.BatchNorm(use_running_average=True)

  def __call__(self, x):
    y = nn.relu6(self.bn1(self.expand(x)))
    y = nn.relu6(self.bn2(self.depthwise(y)))
    return x + self.bn3(self.project(y))


class MobileNetV2ish(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(6, (3, 3), strides=(2, 2), name="stem")(x))
    x = InvertedResidual(6, name="ir1")(x)
    x = InvertedResidual(6, name="ir2")(x)
    return nn.Dense(4, name="logits")(jnp.mean(x, axis=(1, 2)))


class SqueezeExcite(nn.Module):
  reduction: int = 2

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(nn.Conv(c // self.reduction, (1, 1), name="reduce")(s))
    s = nn.sigmoid(nn.Conv(c, (1, 1), name="expand")(s))
    return x * s


class SENet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
    x = SqueezeExcite(name="se")(x)
    x = nn.relu(nn.Conv(6, (3, 3), name="conv2")(x))
    return nn.Dense(3, name="out")(x.reshape(x.shape[0], -1))


class ConvNeXtBlock(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.dim, (7, 7), feature_group_count=self.dim, name="dwconv")(
      x
    )
    y = nn.LayerNorm(epsilon=1e-6, name="norm")(y)
    y = nn.Dense(4 * self.dim, name="pwconv1")(y)
    y = nn.gelu(y)
    y = nn.Dense(self.dim, name="pwconv2")(y)
    gamma = self.param("gamma", nn.initializers.constant(0.5), (self.dim,))
    return x + gamma * y


class ConvNeXtish(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (2, 2), strides=(2, 2), name="stem")(x)
    x = ConvNeXtBlock(4, name="stage0")(x)
    x = nn.LayerNorm(name="head_norm")(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(3, name="head")(x)


class GroupNormCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(
      nn.GroupNorm(num_groups=4, name="gn1")(
        nn.Conv(8, (3, 3), name="conv1")(x)
      )
    )
    x = nn.relu(
      nn.GroupNorm(num_groups=3, name="gn2")(
        nn.Conv(6, (3, 3), name="conv2")(x)
      )
    )
    return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(32, name="hidden1")(x))
    x = nn.relu(nn.Dense(16, name="hidden2")(x))
    return nn.Dense(10, name="logits")(x)


class SelfConcat(nn.Module):
  """Torch-Pruning issue #146: one tensor concatenated with itself."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(6, (3, 3), name="conv1")(x))
    x = jnp.concatenate([x, x], axis=-1)
    x = nn.relu(nn.Conv(5, (3, 3), name="conv2")(x))
    return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


class TwoSourceConcat(nn.Module):
  """Torch-Pruning issue #481: different producers into one consumer."""

  @nn.compact
  def __call__(self, x):
    a = nn.relu(nn.Conv(4, (3, 3), name="branch_a")(x))
    b = nn.relu(nn.Conv(6, (1, 1), name="branch_b")(x))
    y = nn.relu(nn.Conv(5, (3, 3), name="fuse")(jnp.concatenate([b, a], -1)))
    return nn.Dense(3, name="fc")(jnp.mean(y, axis=(1, 2)))


class FrozenBN(nn.Module):
  """Inference-mode BatchNorm with trained statistics; flatten head."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(6, (3, 3), use_bias=False, name="c1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn1")(x))
    x = nn.Conv(5, (3, 3), strides=(2, 2), use_bias=False, name="c2")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn2")(x))
    return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))


class SharedConv(nn.Module):
  """One conv applied twice (shared weights)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(6, (3, 3), name="stem")(x))
    shared = nn.Conv(6, (3, 3), name="shared")
    x = nn.relu(shared(nn.relu(shared(x))))
    return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


class NNXResidualCNN(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.stem = nnx.Conv(3, 6, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(6, use_running_average=True, rngs=rngs)
    self.conv_a = nnx.Conv(6, 5, (3, 3), rngs=rngs)
    self.conv_b = nnx.Conv(5, 6, (3, 3), rngs=rngs)
    self.head = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.stem(x)))
    y = self.conv_b(nnx.relu(self.conv_a(x)))
    x = nnx.relu(x + y)
    return self.head(jnp.mean(x, axis=(1, 2)))


class ChannelsFirstFlatten(nn.Module):
  """A head ported from PyTorch weights: the map transposed to NCHW and
  flattened before the first dense layer (a channel's 576 positions
  contiguous; 9216 rows, more than the dense statistics' closed form
  takes, so the flatten layout must be found)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
    x = nn.relu(nn.Conv(16, (3, 3), name="conv2")(x))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(6, name="fc1")(x))
    return nn.Dense(3, name="fc2")(x)


class OneConvResidual(nn.Module):
  """Residual blocks of one convolution, `x = relu(conv(x)) + x`: each
  block's conv reads and writes the same stream."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="stem")(x))
    for i in range(2):
      x = nn.relu(nn.Conv(8, (3, 3), name=f"res{i}")(x)) + x
    return nn.Dense(3, name="fc")(jnp.mean(x, axis=(1, 2)))


def perturb(variables, seed: int = 0):
  """Non-trivial variables: random weights, biases, norm statistics, for
  every leaf of `variables` (arrays or shapes)."""
  rng = np.random.default_rng(seed)

  def one(path, x):
    name = jax.tree_util.keystr(path[-2:])  # NNX states end in .value
    if "var" in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype)
    if "scale" in name or "gamma" in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype)
    fan = max(1, int(np.prod(x.shape[:-1]))) if len(x.shape) > 1 else 4
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan), x.shape), x.dtype)

  return jax.tree_util.tree_map_with_path(one, variables)


def _keras(name: str, shape=(4, 12, 12, 3)):
  """A `keras_nets` model as (fn, variables, x); Keras imported on use."""
  from tests import keras_nets

  fn, variables = keras_nets.as_function(getattr(keras_nets, name)(shape[1]))
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  return fn, variables, x


def _jax_resnet(kind: str):
  """A model of the jax-resnet package (PyPI), built as its README does,
  at small widths: a basic-block ResNet or a ResNeXt (grouped 3x3)."""
  import jax_resnet

  if kind == "resnext":
    block = functools.partial(
      jax_resnet.ResNetBottleneckBlock, groups=2, base_width=64
    )
    stages = (1, 1)
  else:
    block, stages = jax_resnet.ResNetBlock, (2, 1)
  module = jax_resnet.ResNet(
    block, stage_sizes=stages, n_classes=5, hidden_sizes=(4, 8)
  )
  # inference: its BatchNorm reads the running averages unless batch_stats
  # is mutable
  return _linen(module, shape=(4, 16, 16, 3))


def _linen(module, shape=(4, 12, 12, 3), **kwargs):
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  # perturb draws every leaf: the initialisers' shapes are enough
  shapes = jax.eval_shape(
    functools.partial(module.init, **kwargs), jax.random.key(0), x
  )
  variables = perturb(shapes)
  return module, variables, x


# name -> (builder, expected groups {name: width}, left out {name: phrase})
ZOO = {
  "plain_cnn": (
    lambda: _linen(PlainCNN()),
    {"features_0": 8, "features_1": 12, "features_2": 16},
    {"classifier": "output"},
  ),
  "examples_resnet": (
    lambda: _linen(ExamplesResNet()),
    {
      "conv_init": 4,
      "BottleneckResNetBlock_0/Conv_0": 4,
      "BottleneckResNetBlock_0/Conv_1": 4,
      "BottleneckResNetBlock_0/Conv_2": 16,
      "BottleneckResNetBlock_1/Conv_0": 4,
      "BottleneckResNetBlock_1/Conv_1": 4,
      "BottleneckResNetBlock_2/Conv_0": 8,
      "BottleneckResNetBlock_2/Conv_1": 8,
      "BottleneckResNetBlock_2/Conv_2": 32,
    },
    {"Dense_0": "output"},
  ),
  "preact_resnet": (
    lambda: _linen(PreActResNet()),
    {"stem": 6, "block1/Conv_0": 5, "block2/Conv_0": 7},
    {"head": "output"},
  ),
  "densenet_block": (
    lambda: _linen(DenseBlock()),
    {"stem": 6, "layer0": 4, "layer1": 4, "layer2": 4, "transition": 8},
    {"fc": "output"},
  ),
  "mobilenet_v2": (
    lambda: _linen(MobileNetV2ish()),
    {"stem": 6, "ir1/expand": 24, "ir2/expand": 24},
    {"logits": "output"},
  ),
  "squeeze_excite": (
    lambda: _linen(SENet()),
    {"conv1": 8, "se/reduce": 4, "conv2": 6},
    {"out": "output"},
  ),
  "convnext": (
    lambda: _linen(ConvNeXtish()),
    {"stage0/pwconv1": 16},
    {"stem": "reduces over it", "head": "output"},
  ),
  "groupnorm_cnn": (
    lambda: _linen(GroupNormCNN()),
    {"conv1": 4, "conv2": 3},
    {"fc": "output"},
  ),
  "mlp": (
    lambda: _linen(MLP()),
    {"hidden1": 32, "hidden2": 16},
    {"logits": "output"},
  ),
  "self_concat": (
    lambda: _linen(SelfConcat()),
    {"conv1": 6, "conv2": 5},
    {"fc": "output"},
  ),
  "two_source_concat": (
    lambda: _linen(TwoSourceConcat()),
    {"branch_a": 4, "branch_b": 6, "fuse": 5},
    {"fc": "output"},
  ),
  "frozen_bn": (
    lambda: _linen(FrozenBN()),
    {"c1": 6, "c2": 5},
    {"fc": "output"},
  ),
  "shared_conv": (lambda: _linen(SharedConv()), {"stem": 6}, {"fc": "output"}),
  "channels_first_flatten": (
    lambda: _linen(ChannelsFirstFlatten(), shape=(4, 24, 24, 3)),
    {"conv1": 8, "conv2": 16, "fc1": 6},
    {"fc2": "output"},
  ),
  "one_conv_residual": (
    lambda: _linen(OneConvResidual()),
    {"stem": 8},
    {"fc": "output"},
  ),
  # Keras 3 (JAX backend) as a pure function of two lists of arrays: the
  # layers are named by leaf path (keras_nets' docstrings list them).
  "keras_squeeze_excite": (
    lambda: _keras("squeeze_excite_net"),
    {"t/0": 16, "t/3": 4, "t/7": 8},  # t/0's channels: t/0 and SE's t/5
    {"t/9": "output"},
  ),
  "keras_preact_resnet": (
    lambda: _keras("preact_resnet"),
    {
      "t/0": 8,  # the stem's output, read by block 1 (pre-activated)
      "t/4": 4,
      "t/7": 4,
      "t/16": 4,
      "t/19": 4,
      "t/26": 8,
      "t/29": 8,
      "t/10": 16,  # stage 1's stream: shortcut t/10, last convs t/12 t/22
      "t/32": 32,  # stage 2's stream: shortcut t/32, last conv t/34
    },  # fmt: skip
    {"t/38": "output"},
  ),
}

ZOO.update(
  {
    # The jax-resnet package: names as its Sequential and ConvBlock make them.
    "jax_resnet": (
      lambda: _jax_resnet("resnet"),
      {
        "layers_0/ConvBlock_0/Conv_0": 64,  # the stem
        "layers_2/ConvBlock_0/Conv_0": 4,
        "layers_2/ConvBlock_1/Conv_0": 4,  # stage 1's stream (3 producers)
        "layers_3/ConvBlock_0/Conv_0": 4,
        "layers_4/ConvBlock_0/Conv_0": 8,
        "layers_4/ConvBlock_1/Conv_0": 8,  # stage 2's stream
      },
      {"layers_6": "output"},
    ),
    "jax_resnext": (
      lambda: _jax_resnet("resnext"),
      {
        "layers_0/ConvBlock_0/Conv_0": 64,
        "layers_2/ConvBlock_1/Conv_0": 4,  # the grouped 3x3's output
        "layers_2/ConvBlock_2/Conv_0": 16,
        "layers_3/ConvBlock_1/Conv_0": 8,
        "layers_3/ConvBlock_2/Conv_0": 32,
      },
      {
        "layers_5": "output",
        # read only by the grouped 3x3, which is no consumer (statistics)
        "layers_2/ConvBlock_0/Conv_0": "a grouped convolution reads them",
      },
    ),
  }
)

# Models that are pure functions of their variables (no Linen module).
FUNCTIONS = ("keras_squeeze_excite", "keras_preact_resnet")

# Groups written by several layers: name -> every producer (hand-stated).
PRODUCERS = {
  "keras_squeeze_excite": {"t/0": {"t/0", "t/5"}},
  "keras_preact_resnet": {
    "t/10": {"t/10", "t/12", "t/22"},
    "t/32": {"t/32", "t/34"},
  },
  "one_conv_residual": {"stem": {"stem", "res0", "res1"}},
  "jax_resnet": {
    "layers_2/ConvBlock_1/Conv_0": {
      "layers_2/ConvBlock_1/Conv_0",
      "layers_3/ConvBlock_1/Conv_0",
      "layers_2/ResNetSkipConnection_0/ConvBlock_0/Conv_0",
    },
  },  # fmt: skip
  "examples_resnet": {
    "BottleneckResNetBlock_0/Conv_2": {
      "BottleneckResNetBlock_0/Conv_2",
      "BottleneckResNetBlock_0/conv_proj",
      "BottleneckResNetBlock_1/Conv_2",
    },
  },  # fmt: skip
}


def build(name: str):
  """(apply_fn, variables, x, expected groups, expected left out)."""
  builder, groups, left_out = ZOO[name]
  module, variables, x = builder()
  fn = module if name in FUNCTIONS else (lambda v, x: module.apply(v, x))
  return fn, variables, x, groups, left_out


def module_of(name: str):
  """A zoo model as a factory (`--config.model=tests.zoo:module_of`)."""
  return ZOO[name][0]()[0]


def nnx_model():
  model = NNXResidualCNN(nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  state = perturb(state)
  model = nnx.merge(graphdef, state)
  x = jnp.asarray(
    np.random.default_rng(1).normal(size=(4, 10, 10, 3)), jnp.float32
  )
  return model, x


# --- References for the tests and benchmarks/depgraph_zoo.py ---------------


def half(width: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(width, (width + 1) // 2, replace=False))


def zeroed(variables, group, removed):
  """The variables with the removed channels' rows of every consumer
  kernel set to zero (the reference a pruned model must equal)."""
  flat = surgery.flat_leaves(variables)
  for c in group.consumers:
    member = group.member(c.kernel, c.kernel_axis)
    kernel = flat[c.kernel]
    shape = [1] * kernel.ndim
    shape[c.kernel_axis] = -1
    off = np.isin(member.index, removed)
    flat[c.kernel] = kernel * jnp.asarray(~off, kernel.dtype).reshape(shape)
  order = [p for p in surgery.flat_leaves(variables)]
  treedef = jax.tree_util.tree_structure(variables)
  return jax.tree_util.tree_unflatten(treedef, [flat[p] for p in order])


def local_error(model, variables, pruned, small, consumer, keep, w, x):
  """(|y_g - y_new|^2, |y_g|^2) of one consumer on the original inputs:
  y_g is its output from the group's positions, y_new from the kept ones
  through its kernel with those rows kept and scaled by `w` (made here,
  then checked against the surgery's kernel)."""
  got = model.capture(variables, x, values=[consumer.input])
  inp = got[consumer.input]
  eqn = model.graph.program.eqns[consumer.eqn]
  index, axis, k_axis = consumer.index, consumer.axis, consumer.kernel_axis
  shape = [1] * inp.ndim
  shape[axis] = -1
  part = inp * jnp.asarray(index >= 0, inp.dtype).reshape(shape)
  kernel = np.asarray(surgery.flat_leaves(variables)[consumer.kernel])
  y = eqn.primitive.bind(part, jnp.asarray(kernel), **eqn.params)
  stay = np.flatnonzero((index < 0) | np.isin(index, keep))
  factor = np.ones(len(index))
  for r, c in enumerate(keep):
    factor[index == c] = w[r]
  fshape = [1] * kernel.ndim
  fshape[k_axis] = -1
  rows = np.take(kernel * factor.reshape(fshape), stay, axis=k_axis)
  y_new = eqn.primitive.bind(
    jnp.take(part, stay, axis=axis), jnp.asarray(rows, kernel.dtype),
    **eqn.params,
  )  # fmt: skip
  expected = rows  # the surgery's kernel: these rows, other axes as pruned
  for a in range(kernel.ndim):
    if a != k_axis:
      expected = np.take(
        expected, np.flatnonzero(pruned.mask(consumer.kernel, a)), axis=a
      )
  actual = np.asarray(surgery.flat_leaves(small)[consumer.kernel])
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
  return float(jnp.sum((y - y_new) ** 2)), float(jnp.sum(y**2))


def reconstruction_check(model, variables, group, batches):
  """The group pruned to half by ThiNet's greedy on its combined problem,
  each consumer's least squares on its own Gram matrix: consumer name ->
  (measured, predicted) relative error on the statistics' samples."""
  from thinet_jax import reconstruct, select

  per_consumer = depgraph_collect(model, variables, group, batches)
  combined = depgraph_combine(per_consumer)
  order = select.greedy_order(jnp.asarray(combined.gram))
  keep = np.sort(np.asarray(order[group.width // 2 :]))
  scales, predicted = {}, {}
  for c, st in per_consumer.items():
    gram = jnp.asarray(st.gram)
    scales[c] = np.asarray(reconstruct.ridge_scales(gram, keep))
    predicted[c] = float(reconstruct.relative_error(gram, keep, scales[c]))
  pruned, small = surgery.prune(model, variables, group, keep, scales)
  both = jnp.concatenate(batches)
  sums = {}  # a layer applied twice is one consumer: its errors add up
  for c in group.consumers:
    err, energy = local_error(
      model, variables, pruned, small, c, keep, scales[c.name], both
    )
    total = sums.setdefault(c.name, [0.0, 0.0])
    total[0] += err
    total[1] += energy
  return {c: (err / energy, predicted[c]) for c, (err, energy) in sums.items()}
