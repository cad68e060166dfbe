"""VGG family (Simonyan & Zisserman 2015) with the paper's layer names.

conv{stage}_{index} are 3x3 convs (padding 1), each followed by BatchNorm
bn{stage}_{index} when the spec asks for it, then ReLU; "M" is a 2x2/2 max
pool. ThiNet prunes the output channels of conv_i using the input of the next
layer (post-ReLU, post-pool): conv1_2 ... conv5_3, and fc6 (or fc for the GAP
head) for the last conv. The model records nothing for pruning: the pruning
code reads the traced computation (`depgraph`), and `models.consumer_inputs`
intercepts the layers' calls.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from thinet_jax.models.common import conv_bn
from thinet_jax.spec import POOL, ModelSpec


class VGG(nn.Module):
  """VGG built from a `ModelSpec` of family "vgg".

  __call__(x: [B, H, W, in_channels], train) -> logits [B, num_classes].
  The fc head flattens in NHWC order: row (h * W + w) * C + c of fc6's
  kernel belongs to channel c at position (h, w).
  """

  spec: ModelSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    spec = self.spec
    names = iter(spec.vgg_conv_names())
    for item in spec.layers:
      if item == POOL:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      name = next(names)
      x = conv_bn(
        self,
        x,
        item,
        name,
        "bn" + name[len("conv") :],
        kernel=3,
        batch_norm=spec.batch_norm,
        train=train,
        dtype=self.dtype,
      )
    if spec.head == "gap":
      x = jnp.mean(x, axis=(1, 2))
      return nn.Dense(spec.num_classes, dtype=self.dtype, name="fc")(x)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(spec.fc_widths):
      x = nn.Dense(width, dtype=self.dtype, name=f"fc{6 + i}")(x)
      x = nn.relu(x)
      if spec.dropout:
        x = nn.Dropout(spec.dropout, deterministic=not train)(x)
    classifier = f"fc{6 + len(spec.fc_widths)}"
    return nn.Dense(spec.num_classes, dtype=self.dtype, name=classifier)(x)
