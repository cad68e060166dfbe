"""Bottleneck ResNet family (He et al. 2016) with Caffe's layer names.

Block res{stage+2}{letter} holds branch2a (1x1), branch2b (3x3), branch2c
(1x1), their BatchNorms bn_branch2a/b/c and, in the first block of every
stage, the projection shortcut branch1 / bn_branch1. ThiNet (paper section
4.2) prunes branch2a (consumer branch2b) and branch2b (consumer branch2c);
branch2c and the shortcut keep their widths, since the residual sum needs
them equal. The consumers are "<block>/branch2b" and "<block>/branch2c"
(`models.consumer_inputs` reads their inputs; the model records nothing).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from thinet_jax.models.common import conv_bn
from thinet_jax.spec import ModelSpec


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 bottleneck; stride in branch2a (caffe) or 2b."""

  widths: tuple[int, int]
  out_width: int
  stride: int
  projection: bool
  stride_placement: str
  batch_norm: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    caffe = self.stride_placement == "caffe"
    stride_a, stride_b = (self.stride, 1) if caffe else (1, self.stride)
    common = dict(batch_norm=self.batch_norm, train=train, dtype=self.dtype)
    y = conv_bn(
      self,
      x,
      self.widths[0],
      "branch2a",
      "bn_branch2a",
      kernel=1,
      stride=stride_a,
      **common,
    )
    y = conv_bn(
      self,
      y,
      self.widths[1],
      "branch2b",
      "bn_branch2b",
      kernel=3,
      stride=stride_b,
      **common,
    )
    y = conv_bn(
      self,
      y,
      self.out_width,
      "branch2c",
      "bn_branch2c",
      kernel=1,
      relu=False,
      **common,
    )
    if self.projection:
      x = conv_bn(
        self,
        x,
        self.out_width,
        "branch1",
        "bn_branch1",
        kernel=1,
        stride=self.stride,
        relu=False,
        **common,
      )
    return nn.relu(y + x)


class ResNet(nn.Module):
  """Bottleneck ResNet built from a `ModelSpec` of family "resnet".

  __call__(x: [B, H, W, in_channels], train) -> logits [B, num_classes].
  """

  spec: ModelSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    spec = self.spec
    common = dict(batch_norm=spec.batch_norm, train=train, dtype=self.dtype)
    if spec.stem == "imagenet":
      x = conv_bn(
        self,
        x,
        spec.stem_width,
        "conv1",
        "bn_conv1",
        kernel=7,
        stride=2,
        **common,
      )
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv_bn(
        self, x, spec.stem_width, "conv1", "bn_conv1", kernel=3, **common
      )
      if spec.stem == "small_pool":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    names = iter(spec.resnet_block_names())
    widths = iter(spec.block_widths)
    for stage, (n_blocks, out_width) in enumerate(
      zip(spec.stage_sizes, spec.stage_widths, strict=True)
    ):
      for b in range(n_blocks):
        x = Bottleneck(
          widths=next(widths),
          out_width=out_width,
          stride=2 if (b == 0 and stage > 0) else 1,
          projection=b == 0,
          stride_placement=spec.stride_placement,
          batch_norm=spec.batch_norm,
          dtype=self.dtype,
          name=next(names),
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(spec.num_classes, dtype=self.dtype, name="fc")(x)
