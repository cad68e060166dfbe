"""Keras 3 models on the JAX backend, written as Keras users write them
(the functional API, `layers.*` with Keras' own names and defaults), and
given to the library as a user would: the pure function
`lambda v, x: model.stateless_call(v["t"], v["nt"], x, training=False)[0]`
of two plain lists of arrays (no module names: leaves "t/0", "t/17").
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402


def _squeeze_excite(x, channels: int, reduction: int = 4):
  """As keras.applications' EfficientNet writes it: global mean with
  keepdims, two 1x1 convolutions (swish, sigmoid), a multiply."""
  s = layers.GlobalAveragePooling2D(keepdims=True)(x)
  s = layers.Conv2D(channels // reduction, 1, activation="swish")(s)
  s = layers.Conv2D(channels, 1, activation="sigmoid")(s)
  return layers.Multiply()([x, s])


def squeeze_excite_net(size: int = 12) -> keras.Model:
  """Conv-BN-swish, squeeze-and-excitation, conv-ReLU, GAP head.

  Trainable variables in order: t/0 conv kernel (16), t/1 t/2 BN gamma
  beta, t/3 t/4 SE reduce (4), t/5 t/6 SE expand (16), t/7 t/8 conv (8),
  t/9 t/10 dense.
  """
  inp = keras.Input((size, size, 3))
  x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
  x = layers.Activation("swish")(layers.BatchNormalization()(x))
  x = _squeeze_excite(x, 16)
  x = layers.ReLU()(layers.Conv2D(8, 3, padding="same")(x))
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inp, layers.Dense(5)(x))


def _preact_bottleneck(x, filters: int, stride: int = 1, project=False):
  """keras.applications' ResNetV2 block: BN-ReLU first, the shortcut a
  projection of the pre-activated input or the input itself."""
  pre = layers.ReLU()(layers.BatchNormalization()(x))
  shortcut = (
    layers.Conv2D(4 * filters, 1, strides=stride)(pre) if project else x
  )
  y = layers.Conv2D(filters, 1, use_bias=False)(pre)
  y = layers.ReLU()(layers.BatchNormalization()(y))
  y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(
    y
  )
  y = layers.ReLU()(layers.BatchNormalization()(y))
  y = layers.Conv2D(4 * filters, 1)(y)
  return layers.Add()([shortcut, y])


def preact_resnet(size: int = 12) -> keras.Model:
  """Stem, three pre-activation bottlenecks (two stages), BN-ReLU, GAP.

  Trainable variables (Keras orders them by its layer graph): t/0 t/1
  stem (8); block 1: t/2 t/3 BN, t/4 conv (4), t/5 t/6 BN, t/7 conv (4),
  t/8 t/9 BN, t/10 t/11 shortcut projection (16), t/12 t/13 conv (16);
  block 2: t/14 t/15 BN, t/16 conv (4), t/17 t/18 BN, t/19 conv (4), t/20
  t/21 BN, t/22 t/23 conv (16); block 3: t/24 t/25 BN, t/26 conv (8),
  t/27 t/28 BN, t/29 conv (8), t/30 t/31 BN, t/32 t/33 projection (32),
  t/34 t/35 conv (32); t/36 t/37 BN; t/38 t/39 dense.
  """
  inp = keras.Input((size, size, 3))
  x = layers.Conv2D(8, 3, padding="same")(inp)
  x = _preact_bottleneck(x, 4, project=True)
  x = _preact_bottleneck(x, 4)
  x = _preact_bottleneck(x, 8, stride=2, project=True)
  x = layers.ReLU()(layers.BatchNormalization()(x))
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inp, layers.Dense(5)(x))


def as_function(model: keras.Model, seed: int = 0):
  """(fn, variables): the model as a user hands it to `tj.trace`, with
  random weights and BatchNorm statistics (fresh BatchNorm is nearly the
  identity, which would hide mistakes)."""
  rng = np.random.default_rng(seed)

  def draw(v):
    shape = tuple(v.shape)
    if "variance" in v.path or "gamma" in v.path:
      return jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32)
    fan = max(1, int(np.prod(shape[:-1]))) if len(shape) > 1 else 4
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan), shape), jnp.float32)

  variables = {
    "t": [draw(v) for v in model.trainable_variables],
    "nt": [draw(v) for v in model.non_trainable_variables],
  }

  def fn(v, x):
    return model.stateless_call(v["t"], v["nt"], x, training=False)[0]

  return fn, variables
