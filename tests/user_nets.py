"""Model factories as a user writes them, for the commands' tests:
`--config.model=tests.user_nets:linen_cnn` (Flax Linen, a residual add,
BatchNorm, dropout) and `tests.user_nets:nnx_cnn` (Flax NNX);
`tests.user_nets:edited_cnn`, whose code a test "edits" between runs
(its activation and width from the environment)."""

from __future__ import annotations

import os

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx


class LinenCNN(nn.Module):
  """Stem, one residual block, dropout, global average pooling, a head."""

  width: int = 8
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda name: nn.BatchNorm(  # noqa: E731
      use_running_average=not train, momentum=0.9, name=name
    )
    x = nn.relu(norm("stem_bn")(nn.Conv(self.width, (3, 3), name="stem")(x)))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    y = nn.relu(norm("bn1")(nn.Conv(12, (3, 3), name="block_conv1")(x)))
    y = norm("bn2")(nn.Conv(self.width, (3, 3), name="block_conv2")(y))
    x = nn.relu(x + y)
    x = nn.Dropout(0.1, deterministic=not train)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


def linen_cnn() -> nn.Module:
  return LinenCNN()


class NNXCNN(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, num_classes: int = 10):
    self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.bn1 = nnx.BatchNorm(8, rngs=rngs)
    self.conv2 = nnx.Conv(8, 16, (3, 3), strides=(2, 2), rngs=rngs)
    self.bn2 = nnx.BatchNorm(16, rngs=rngs)
    self.head = nnx.Linear(16, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))


def nnx_cnn(rngs: nnx.Rngs) -> nnx.Module:
  return NNXCNN(rngs)


class EditedCNN(nn.Module):
  """A model whose author edits it: the activation (relu or gelu: the
  same parameters, another computation) and the stem's width."""

  activation: str = "relu"
  width: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = nn.gelu if self.activation == "gelu" else nn.relu
    x = act(nn.Conv(self.width, (3, 3), name="stem")(x))
    x = act(nn.Conv(12, (3, 3), name="conv2")(x))
    return nn.Dense(10, name="head")(jnp.mean(x, axis=(1, 2)))


def edited_cnn() -> nn.Module:
  """The code as it stands: THINET_TEST_ACTIVATION, THINET_TEST_WIDTH."""
  return EditedCNN(
    os.environ.get("THINET_TEST_ACTIVATION", "relu"),
    int(os.environ.get("THINET_TEST_WIDTH", "8")),
  )
