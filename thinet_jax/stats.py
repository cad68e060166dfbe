"""Gram statistics of channel contributions: everything ThiNet needs.

Consumer layer L (the one whose output is reconstructed) has kernel
`W[kh, kw, C, D]` (HWIO), stride s and padding; its input is the producer's
post-ReLU, post-pool output `X[B, H, W, C]`. One *sample* is one (image,
output position, output channel) triple, and channel c contributes

    xhat[(b, p, d), c] = sum_u W[u, c, d] * X[b, s*p + u - pad, c]

to it, so that the consumer's output minus bias is `sum_c xhat[:, c]` (paper
eq. 3-5). ThiNet's selection, least squares and error are all functions of
the Gram matrix `G = sum_samples xhat xhat^T` [C, C] (see docs/design.md):
statistics stream in O(C^2) memory whatever the number of samples, and add up
over batches, devices and hosts.

Two sample sets:

* `sampled` (the paper's, section 3.2 and the official code): per image,
  `samples_per_image` (position, output channel) pairs drawn uniformly and
  independently (with replacement).
* `exhaustive`: every position and output channel, computed without
  materialising xhat: `G[c, c'] = sum_{u,v} A[u,c,v,c'] * M[u,c,v,c']` with
  the patch covariance `A = sum_{b,p} X[b, p+u, c] X[b, p+v, c']` and
  `M = sum_d W[u,c,d] W[v,c',d]`.

Dense consumers: after flatten a channel owns its whole map,
`xhat[(b,d), c] = sum_{h,w} W[(h,w,c), d] X[b,h,w,c]`; after global average
pooling `xhat[(b,d), c] = W[c, d] * mean_hw X[b,h,w,c]`.

Beside G, `sums=True` also gives the per-output-channel sums of the
contributions, `S[c, d] = sum over samples of output channel d of xhat_c`,
and the sample count of each d. Post-ReLU inputs are non-negative, so
contributions have non-zero means; the consumer's bias (or its BatchNorm's
running mean) can absorb a constant shift per output channel d, and the
error that survives it is the one of the centred Gram matrix
`Gc = G - sum_d S[:, d] S[:, d]^T / n_d` (`centred_gram`).

Reconstructing a different target: by default the target of a sample is
the current consumer's own output `sum_c xhat_c`, so everything is a
function of G. Pruning group after group, that output already carries the
errors of the groups pruned before; with `target` (e.g. the *unpruned*
model's consumer output at the same samples,
`depgraph.collect(reference=...)`), the target t becomes one more column
beside the contributions: the Gram matrix and the sums returned have one
more row and column, t's, as if it were channel C. `GroupStats` splits
them into `cross = sum xhat t` [C], `target_norm = sum t^2` and
`target_sums` [D].

Example:

  >>> gram, count = stats.conv_gram(x, kernel, strides=(1, 1), padding="SAME")
  >>> order = select.greedy_order(gram)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MODES = ("sampled", "exhaustive")

Padding = str | int | Sequence[tuple[int, int]]


def _pads(
  padding: Padding, hw: tuple[int, int], window: tuple[int, int], strides
) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(
        f"padding must be SAME, VALID, an int or pairs: {padding}"
      )
    return list(lax.padtype_to_pads(hw, window, strides, padding.upper()))
  if isinstance(padding, int):
    return [(padding, padding)] * 2
  return [tuple(p) for p in padding]


def _check_mode(mode: str, key) -> None:
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "sampled" and key is None:
    raise ValueError("mode='sampled' needs a PRNG key: key=jax.random.key(0)")


def _weights(mask, batch: int) -> jax.Array:
  return jnp.ones((batch,), jnp.float32) if mask is None else mask


def conv_gram(
  x: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int] = (1, 1),
  padding: Padding = "SAME",
  mode: str = "exhaustive",
  *,
  key: jax.Array | None = None,
  samples_per_image: int = 10,
  mask: jax.Array | None = None,
  sums: bool = False,
  target: jax.Array | None = None,
) -> tuple:
  """Gram matrix of per-channel contributions to a conv consumer's output.

  Args:
    x: consumer input [B, H, W, C] (post-ReLU, post-pool producer output).
    kernel: consumer kernel [kh, kw, C, D] (HWIO).
    strides: consumer strides.
    padding: "SAME", "VALID", an int, or ((top, bottom), (left, right)).
      Our models pad k // 2 on every side (PyTorch/Caffe convention): pass
      that int for stride-2 3x3 convs, where XLA's "SAME" pads (0, 1).
    mode: "exhaustive" or "sampled".
    key: PRNG key (sampled mode).
    samples_per_image: samples drawn per image (sampled mode).
    mask: optional [B] 0/1 weights; masked images contribute nothing.
    sums: also return the per-output-channel sums (see the module doc).
    target: [B, Ho, Wo, D], a target value for every output (e.g. another
      model's `linear_output`): appended as channel C of gram and sums.

  Under `jit`: `strides`, `padding`, `mode`, `samples_per_image` and `sums`
  are static (Python values that shape the computation): close over them
  or list them in `static_argnames`, e.g.
  `jax.jit(conv_gram, static_argnames=("strides", "padding", "mode",
  "samples_per_image", "sums"))`; x, kernel, key, mask and target are
  traced.

  Returns:
    (gram [C, C] float32, count): count is the number of samples, a Python
    int, or a scalar array when `mask` is given. With `sums`, also
    sums [C, D] (sum of xhat_c over the samples of output channel d) and
    output_counts [D] (the number of those samples). With `target`, gram
    is [C + 1, C + 1] and sums [C + 1, D].
  """
  _check_mode(mode, key)
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)
  b, h, w, c = x.shape
  kh, kw, c_in, d = kernel.shape
  if c_in != c:
    raise ValueError(
      f"kernel has {c_in} input channels but x has {c}: kernel {kernel.shape}"
      f", x {x.shape}"
    )
  sh, sw = strides
  (pt, pb), (pl, pr) = _pads(padding, (h, w), (kh, kw), (sh, sw))
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho = (h + pt + pb - kh) // sh + 1
  wo = (w + pl + pr - kw) // sw + 1
  weights = _weights(mask, b)
  wf = kernel.reshape(kh * kw, c, d)
  offsets = [(u, v) for u in range(kh) for v in range(kw)]
  if mode == "exhaustive":
    # Shifted views [k*k, B*Ho*Wo, C]: patch entry u of every output position.
    views = jnp.stack(
      [
        xp[:, u : u + sh * (ho - 1) + 1 : sh, v : v + sw * (wo - 1) + 1 : sw]
        for u, v in offsets
      ]
    )
    views = views * jnp.sqrt(weights)[None, :, None, None, None]
    views = views.reshape(kh * kw, b * ho * wo, c)
    a = jnp.einsum("unc,vnk->ucvk", views, views)
    m = jnp.einsum("ucd,vkd->ucvk", wf, wf)
    gram = jnp.einsum("ucvk,ucvk->ck", a, m)
    per_image = ho * wo * d
    # sum_n xhat[(n, d), c] = sum_u W[u, c, d] sum_n X[n, u, c].
    channel_sums = jnp.einsum("unc,ucd->cd", views, wf)
    output_counts = jnp.full((d,), jnp.sum(weights) * ho * wo)
    if target is not None:
      t = (
        _check_target(target, (b, ho, wo, d))
        * jnp.sqrt(weights)[:, None, None, None]
      )
      t = t.reshape(b * ho * wo, d)
      # sum_(n, d) xhat[(n, d), c] t[n, d] = sum_u sum_n X[n, u, c] (t W_u^T).
      cross = jnp.einsum("unc,unc->c", views, jnp.einsum("nd,ucd->unc", t, wf))
      gram, channel_sums = _append_target(
        gram, channel_sums, cross, jnp.sum(t * t), jnp.sum(t, axis=0)
      )
  else:
    kpos, kout = jax.random.split(key)
    s = samples_per_image
    pos = jax.random.randint(kpos, (b, s), 0, ho * wo)
    out_channel = jax.random.randint(kout, (b, s), 0, d)
    ph, pw = (pos // wo) * sh, (pos % wo) * sw
    uh = jnp.array([u for u, _ in offsets])
    uw = jnp.array([v for _, v in offsets])
    patches = xp[
      jnp.arange(b)[:, None, None],
      ph[:, :, None] + uh,
      pw[:, :, None] + uw,
    ]  # [B, S, k*k, C]
    w_sel = jnp.moveaxis(wf[:, :, out_channel], (2, 3), (0, 1))
    rows = jnp.sum(patches * w_sel, axis=2)  # [B, S, C]
    if target is not None:
      t = _check_target(target, (b, ho, wo, d))
      t = t[jnp.arange(b)[:, None], pos // wo, pos % wo, out_channel]
      rows = jnp.concatenate([rows, t[:, :, None]], axis=2)
    rows = rows * jnp.sqrt(weights)[:, None, None]
    rows = rows.reshape(b * s, rows.shape[-1])
    gram = rows.T @ rows
    per_image = s
    channel_sums, output_counts = _sums_by_output(rows, out_channel, weights, d)
  count = b * per_image if mask is None else jnp.sum(mask) * per_image
  if sums:
    return gram, count, channel_sums, output_counts
  return gram, count


def _check_target(target, shape) -> jax.Array:
  target = jnp.asarray(target)
  if target.shape != shape:
    raise ValueError(
      f"target has shape {target.shape}; the consumer's output is {shape}"
    )
  return target


def _append_target(gram, channel_sums, cross, norm, target_sums):
  """Borders G [C, C] and S [C, D] with the target as channel C."""
  top = jnp.concatenate([gram, cross[:, None]], axis=1)
  bottom = jnp.concatenate([cross, norm[None]])[None]
  gram = jnp.concatenate([top, bottom], axis=0)
  return gram, jnp.concatenate([channel_sums, target_sums[None]], axis=0)


def _sums_by_output(rows, out_channel, weights, d):
  """Sampled rows [B * S, C] summed per drawn output channel: ([C, D], [D])."""
  s = out_channel.shape[1]
  index = out_channel.reshape(-1)
  channel_sums = jax.ops.segment_sum(rows, index, num_segments=d).T
  output_counts = jax.ops.segment_sum(
    jnp.repeat(weights, s), index, num_segments=d
  )
  return channel_sums, output_counts


def dense_gram(
  x: jax.Array,
  kernel: jax.Array,
  pooling: str = "flatten",
  mode: str = "exhaustive",
  *,
  key: jax.Array | None = None,
  samples_per_image: int = 10,
  mask: jax.Array | None = None,
  sums: bool = False,
  target: jax.Array | None = None,
) -> tuple:
  """Gram matrix of per-channel contributions to a dense consumer.

  Args:
    x: the map before the dense layer, [B, H, W, C].
    kernel: [H * W * C, D] after "flatten" (rows in NHWC order), or [C, D]
      after "gap" (global average pooling).
    pooling: "flatten" or "gap".
    mode, key, samples_per_image, mask, sums: as in `conv_gram`; a sample
      is one (image, output unit) pair.
    target: [B, D], appended as channel C (see `conv_gram`).

  Under `jit`: `pooling`, `mode`, `samples_per_image` and `sums` are
  static (`static_argnames`); x, kernel, key, mask and target are traced.

  Returns:
    (gram [C, C], count) or, with `sums`, (gram, count, sums [C, D],
    output_counts [D]), as `conv_gram`.
  """
  _check_mode(mode, key)
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)
  b, h, w, c = x.shape
  d = kernel.shape[-1]
  weights = _weights(mask, b)
  if pooling == "flatten":
    if kernel.shape[0] != h * w * c:
      raise ValueError(
        f"flatten kernel has {kernel.shape[0]} rows, x gives {h}*{w}*{c}"
      )
    wr = kernel.reshape(h * w, c, d)
    xhat_of = lambda xs, ws: jnp.einsum("bpc,pcd->bdc", xs, ws)  # noqa: E731
    xs = x.reshape(b, h * w, c)
  elif pooling == "gap":
    if kernel.shape[0] != c:
      raise ValueError(f"gap kernel has {kernel.shape[0]} rows, x has {c}")
    wr = kernel
    xs = jnp.mean(x, axis=(1, 2))
    xhat_of = lambda xs, ws: xs[:, None, :] * ws.T[None]  # noqa: E731
  else:
    raise ValueError(f'pooling must be "flatten" or "gap", got {pooling!r}')
  if target is not None:
    target = _check_target(target, (b, d))
  if mode == "exhaustive":
    if pooling == "gap":  # Closed form: (m^T m) * (W W^T), elementwise.
      mw = xs * jnp.sqrt(weights)[:, None]
      gram = (mw.T @ mw) * (kernel @ kernel.T)
      channel_sums = jnp.sum(mw, axis=0)[:, None] * kernel
      if target is not None:
        t = target * jnp.sqrt(weights)[:, None]
        cross = jnp.einsum("bc,cd,bd->c", mw, kernel, t)
    else:
      xhat = xhat_of(xs, wr) * jnp.sqrt(weights)[:, None, None]
      gram = jnp.einsum("bdc,bdk->ck", xhat, xhat)
      channel_sums = jnp.sum(xhat, axis=0).T
      if target is not None:
        t = target * jnp.sqrt(weights)[:, None]
        cross = jnp.einsum("bdc,bd->c", xhat, t)
    if target is not None:
      gram, channel_sums = _append_target(
        gram, channel_sums, cross, jnp.sum(t * t), jnp.sum(t, axis=0)
      )
    per_image = d
    output_counts = jnp.full((d,), jnp.sum(weights))
  else:
    s = samples_per_image
    out_channel = jax.random.randint(key, (b, s), 0, d)
    xhat = xhat_of(xs, wr)  # [B, D, C]
    if target is not None:
      xhat = jnp.concatenate([xhat, target[:, :, None]], axis=2)
    rows = jnp.take_along_axis(xhat, out_channel[:, :, None], axis=1)
    rows = rows * jnp.sqrt(weights)[:, None, None]
    rows = rows.reshape(b * s, rows.shape[-1])
    gram = rows.T @ rows
    per_image = s
    channel_sums, output_counts = _sums_by_output(rows, out_channel, weights, d)
  count = b * per_image if mask is None else jnp.sum(mask) * per_image
  if sums:
    return gram, count, channel_sums, output_counts
  return gram, count


def centred_gram(
  gram: jax.Array, sums: jax.Array, output_counts: jax.Array
) -> jax.Array:
  """The Gram matrix of the contributions centred per output channel.

  `Gc = G - sum_d S[:, d] S[:, d]^T / n_d` (output channels without samples
  are skipped): the scatter of the contributions around their mean in each
  output channel d. A reconstruction's error in Gc is the error left after
  the consumer's bias (or BatchNorm mean) absorbs the best constant shift
  per output channel (`reconstruct.mean_shift`); every function of G in
  `select` and `reconstruct` takes Gc in its place.

  The subtraction cancels most of G when the means dominate (post-ReLU
  inputs): NumPy arrays are computed in float64 on the host, JAX arrays
  (e.g. under `jit`) in their own precision.

  Args:
    gram: [C, C] from `conv_gram` / `dense_gram` / `collect`.
    sums: [C, D] per-output-channel sums of the same samples.
    output_counts: [D] samples per output channel.
  """
  arrays = (gram, sums, output_counts)
  xp = jnp if any(isinstance(a, jax.Array) for a in arrays) else np
  if xp is np:
    gram, sums, output_counts = (np.asarray(a, np.float64) for a in arrays)
  safe = xp.where(output_counts > 0, output_counts, 1)
  inverse = xp.where(output_counts > 0, 1.0 / safe, 0.0)
  return gram - (sums * inverse) @ sums.T


class GroupStats(NamedTuple):
  """Statistics of one group over a stream of batches (host, float64).

  gram: [C, C] sum over samples of xhat xhat^T.
  count: number of samples.
  zero_fraction: [C] fraction of zeros of the producer's post-ReLU output
    per channel (APoZ, Hu et al. 2016), over every image and position.
  images: number of images seen.
  sums: [C, D] sum of xhat_c over the samples of consumer output channel d.
  output_counts: [D] number of samples of output channel d.
  cross, target_norm, target_sums: with a reference target t (`collect`'s
    `reference`): sum xhat_c t [C], sum t^2, and the sums of t over the
    samples of each output channel [D]; None otherwise.
  """

  gram: np.ndarray
  count: int
  zero_fraction: np.ndarray
  images: int
  sums: np.ndarray | None = None
  output_counts: np.ndarray | None = None
  cross: np.ndarray | None = None
  target_norm: float | None = None
  target_sums: np.ndarray | None = None

  def centred(self) -> np.ndarray:
    """`centred_gram` of these statistics (float64)."""
    return centred_gram(self.gram, self.sums, self.output_counts)

  def target(self, centred: bool = False) -> Target:
    """The least-squares problem these statistics pose (float64).

    Without a reference target, the target is the consumer's own output:
    `cross = G 1`, `norm = 1^T G 1`. `centred`: every term centred per
    output channel (`centred_gram` of the bordered matrix).
    """
    if self.cross is None:
      gram = self.centred() if centred else np.asarray(self.gram, np.float64)
      return Target(gram, gram.sum(axis=1), float(gram.sum()))
    c = self.gram.shape[0]
    bordered = np.zeros((c + 1, c + 1))
    bordered[:c, :c] = self.gram
    bordered[:c, c] = bordered[c, :c] = self.cross
    bordered[c, c] = self.target_norm
    if centred:
      sums = np.concatenate([self.sums, self.target_sums[None]], axis=0)
      bordered = centred_gram(bordered, sums, self.output_counts)
    return Target(bordered[:c, :c], bordered[:c, c], float(bordered[c, c]))


class Target(NamedTuple):
  """A least-squares target in Gram form: min_w |t - xhat_S w|^2 has
  normal equations `gram_SS w = cross_S`, and `norm = |t|^2`."""

  gram: np.ndarray
  cross: np.ndarray
  norm: float
