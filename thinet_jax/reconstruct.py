"""Least-squares rescaling of the kept channels, and the relative error.

After selection keeps the set S, ThiNet rescales the kept channels' consumer
weights by w minimising the reconstruction error (paper eq. 6):

    w = argmin sum_samples (yhat - xhat_S w)^2,   yhat = sum_c xhat_c

In terms of the Gram matrix G (see `stats`), `X_S^T X_S = G_SS` and
`X_S^T yhat = (G 1)_S`, so with a ridge term lam:

    w = (G_SS + lam I)^-1 (G 1)_S

lam = 0 is the paper's closed form; a singular G_SS (e.g. two proportional
channels both kept) still gets finite scales, the minimum-norm least-squares
solution. The relative error of (S, w) is

    e = (1^T G 1 - 2 w^T (G 1)_S + w^T G_SS w) / (1^T G 1)

which lies in [0, 1] for w from `ridge_scales` (keeping w = 1 is also a
candidate, and removing every contribution costs exactly 1).

Centred (BatchNorm-aware) reconstruction: the same functions on the centred
Gram matrix `Gc` (`stats.centred_gram`) fit the scales to the error that
survives a constant shift per consumer output channel d, and `mean_shift`
gives that shift, `delta_d = mean_d(yhat) - mean_d(xhat_S w)`, which
`surgery.prune` folds into the consumer's bias or BatchNorm running mean.

Another target t (e.g. the unpruned model's output at the same samples,
`depgraph.collect(reference=...)`): every function takes `cross = X^T t` [C]
in place of `G 1` (and `norm = t^T t` in place of `1^T G 1`, `target_sums`
in place of the contributions' sums); `stats.GroupStats.target` gives all
three, centred or not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from thinet_jax.select import _check_gram, _cross


def _check_keep(gram: jax.Array, keep: jax.Array) -> jax.Array:
  _check_gram(gram)
  keep = jnp.asarray(keep)
  c = gram.shape[0]
  if keep.ndim != 1 or keep.shape[0] < 1 or keep.shape[0] > c:
    raise ValueError(
      f"keep must be 1-D with 1..{c} channel indices, got shape {keep.shape}"
    )
  return keep


@jax.jit
def _ridge(gram, cross, keep, ridge):
  g_ss = gram[keep][:, keep]
  rhs = cross[keep]
  system = g_ss + ridge * jnp.eye(keep.shape[0], dtype=gram.dtype)
  # SVD-based least squares: the exact solve when the system is regular, the
  # minimum-norm solution when it is singular (never inf or NaN).
  return jnp.linalg.lstsq(system, rhs)[0]


def ridge_scales(
  gram: jax.Array,
  keep: jax.Array,
  ridge: float = 0.0,
  cross: jax.Array | None = None,
) -> jax.Array:
  """Least-squares scales of the kept channels' contributions.

  Args:
    gram: [C, C] Gram matrix of channel contributions.
    keep: int [n] kept channel indices.
    ridge: lam >= 0 (0 is the paper's closed form).
    cross: [C] X^T t for another target t; default G 1.

  Returns:
    [n] scales w: multiply consumer input channel keep[i] by w[i].
  """
  gram = jnp.asarray(gram)
  keep = _check_keep(gram, keep)
  if ridge < 0:
    raise ValueError(f"ridge must be >= 0, got {ridge}")
  cross = _cross(gram, cross)
  return _ridge(gram, cross, keep, jnp.asarray(ridge, gram.dtype))


@jax.jit
def _error(gram, cross, total, keep, scales):
  g_ss = gram[keep][:, keep]
  residual = total - 2.0 * scales @ cross[keep] + scales @ g_ss @ scales
  return residual / total


def relative_error(
  gram: jax.Array,
  keep: jax.Array,
  scales: jax.Array | None = None,
  cross: jax.Array | None = None,
  norm: float | None = None,
) -> jax.Array:
  """Relative reconstruction error of keeping `keep` scaled by `scales`.

  Args:
    gram: [C, C] Gram matrix.
    keep: int [n] kept channels.
    scales: [n] scales, default ones (no least squares).
    cross, norm: X^T t and t^T t for another target t; default G 1 and
      1^T G 1 (both or neither).

  Returns:
    Scalar: residual sum of squares over the target's sum of squares.
  """
  gram = jnp.asarray(gram)
  keep = _check_keep(gram, keep)
  if scales is None:
    scales = jnp.ones(keep.shape, gram.dtype)
  scales = jnp.asarray(scales, gram.dtype)
  if scales.shape != keep.shape:
    raise ValueError(f"scales {scales.shape} do not match keep {keep.shape}")
  if (cross is None) != (norm is None):
    raise ValueError("give both cross and norm (another target) or neither")
  total = jnp.sum(gram) if norm is None else jnp.asarray(norm, gram.dtype)
  return _error(gram, _cross(gram, cross), total, keep, scales)


def mean_shift(
  sums: jax.Array,
  output_counts: jax.Array,
  keep: jax.Array,
  scales: jax.Array | None = None,
  target_sums: jax.Array | None = None,
) -> jax.Array:
  """The constant per output channel that the pruned layer has lost.

  `delta_d = (T_d - sum_c w_c S[c, d]) / n_d`, with w_c the scale of kept
  channel c and 0 for removed ones, and T_d the target's sum (default
  `sum_c S[c, d]`): the target's mean minus the reconstruction's mean over
  the samples of output channel d (0 where n_d = 0). Adding delta to the
  consumer's output (its bias, or minus its BatchNorm running mean) makes
  the reconstruction's error mean-free.

  Args:
    sums: [C, D] per-output-channel sums of the contributions
      (`stats.GroupStats.sums`).
    output_counts: [D] samples per output channel.
    keep: int [n] kept channels.
    scales: [n] their scales, default ones.
    target_sums: [D] sums of another target per output channel.

  Returns:
    [D] shift to add to the consumer's output.
  """
  sums = jnp.asarray(sums)
  keep = jnp.asarray(keep)
  if scales is None:
    scales = jnp.ones(keep.shape, sums.dtype)
  scales = jnp.asarray(scales, sums.dtype)
  if scales.shape != keep.shape:
    raise ValueError(f"scales {scales.shape} do not match keep {keep.shape}")
  kept = jnp.zeros(sums.shape[0], sums.dtype).at[keep].set(scales)
  if target_sums is None:
    target_sums = jnp.sum(sums, axis=0)
  lost = jnp.asarray(target_sums, sums.dtype) - kept @ sums
  counts = jnp.asarray(output_counts, sums.dtype)
  safe = jnp.where(counts > 0, counts, 1)
  return jnp.where(counts > 0, lost / safe, 0)
