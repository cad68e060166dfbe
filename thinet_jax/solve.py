"""Least squares for many kept sets at once: masked solves and error curves.

A criterion's removal order answers every keep count (`select`): the kept
set of n channels is the order's last n, a 0/1 mask. Here K masks are
solved in one vmapped call (`masked_scales`), their errors read off the
Gram matrix (`masked_errors`), and `error_curve` gives e(n) for every n,
which budget allocation (`allocate`) and ratio sweeps use. Each
works for the paper's target (the consumer's own output: cross = G 1,
norm = 1^T G 1) and for any other target in Gram form (`stats.Target`:
the centred problem, the unpruned model's output), so a curve describes
exactly the fit `reconstruct.ridge_scales` then performs.

Every function is traceable (`jit`, `vmap`, `grad`); the symmetry check
of a Gram matrix runs only on concrete values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import select


def keep_masks(order: jax.Array, counts: jax.Array) -> jax.Array:
  """0/1 masks [K, C] of the kept sets: the last counts[k] of `order`."""
  order = jnp.asarray(order)
  c = order.shape[0]
  rank = jnp.zeros((c,), jnp.int32).at[order].set(jnp.arange(c))
  counts = jnp.asarray(counts, jnp.int32)
  return (rank[None, :] >= c - counts[:, None]).astype(jnp.float32)


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _target(gram: jax.Array, cross, norm) -> tuple[jax.Array, jax.Array]:
  """(cross, norm) of the target: given, or the own output's G 1, 1^T G 1."""
  if (cross is None) != (norm is None):
    raise ValueError("give both cross and norm of the target, or neither")
  if cross is None:
    return jnp.sum(gram, axis=1), jnp.sum(gram)
  cross = jnp.asarray(cross, gram.dtype)
  if cross.shape != gram.shape[:1]:
    raise ValueError(f"cross {cross.shape} does not match gram {gram.shape}")
  return cross, jnp.asarray(norm, gram.dtype)


@jax.jit
def _masked_scales(gram, cross, mask, ridge):
  m = mask.astype(gram.dtype)
  # The kept block G_SS (+ ridge) with the pruned rows and columns replaced
  # by an identity block scaled to G_SS's largest diagonal entry: its
  # least-squares solution is that of G_SS on the kept entries, 0 elsewhere,
  # with the same SVD cut-off as `reconstruct.ridge_scales` on G_SS.
  fill = jnp.max(jnp.diagonal(gram) * m)
  system = gram * m[:, None] * m[None, :] + jnp.diag(
    ridge * m + fill * (1.0 - m)
  )
  return jnp.linalg.lstsq(system, cross * m)[0] * m


def masked_scales(
  gram: jax.Array,
  masks: jax.Array,
  ridge: float = 0.0,
  cross: jax.Array | None = None,
) -> jax.Array:
  """Least-squares scales [K, C] for K kept sets given as masks [K, C].

  Entry (k, c) is `reconstruct.ridge_scales(gram, kept_k, ridge, cross)`
  at c's place among the kept, and 0 for a pruned c. One vmapped solve;
  traceable (gram, masks, ridge and cross may all be traced).

  Args:
    gram: [C, C] symmetric Gram matrix.
    masks: [K, C] 0/1 kept masks (`keep_masks`).
    ridge: ridge term >= 0.
    cross: [C] X^T t of another target (`stats.Target.cross`); default
      G 1, the consumer's own output.
  """
  gram = jnp.asarray(gram, jnp.float32)
  if _concrete(gram):
    select.check_symmetric(gram)
  cross, _ = _target(gram, cross, None if cross is None else 0.0)
  solve = jax.vmap(_masked_scales, in_axes=(None, None, 0, None))
  return solve(gram, cross, jnp.asarray(masks), jnp.asarray(ridge, gram.dtype))


@jax.jit
def _masked_error(gram, cross, norm, weights):
  return (norm - 2.0 * weights @ cross + weights @ gram @ weights) / norm


def masked_errors(
  gram: jax.Array,
  weights: jax.Array,
  cross: jax.Array | None = None,
  norm: float | None = None,
) -> jax.Array:
  """Relative reconstruction errors [K] of K weight vectors [K, C] (the
  scales of the kept channels, 0 for pruned ones) against the target
  (cross, norm), default the own output; see `reconstruct.relative_error`.
  Traceable."""
  gram = jnp.asarray(gram, jnp.float32)
  cross, norm = _target(gram, cross, norm)
  one = jax.vmap(_masked_error, in_axes=(None, None, None, 0))
  return one(gram, cross, norm, jnp.asarray(weights))


def error_curve(
  gram: jax.Array,
  order: jax.Array,
  least_squares: bool = True,
  ridge: float = 0.0,
  cross: jax.Array | None = None,
  norm: float | None = None,
) -> jax.Array | np.ndarray:
  """Relative error e(n) of keeping the last n of `order`, for n = 1..C.

  Args:
    gram, order: [C, C] Gram matrix and a removal order [C].
    least_squares, ridge: the fit (else unit scales).
    cross, norm: another target in Gram form (`stats.Target`: the centred
      problem, the unpruned model's output), as `masked_errors`.

  Returns:
    [C]: entry n - 1 is the error with n channels kept. With least
    squares the curve never rises as n grows (nested kept sets). float64
    NumPy for concrete inputs; a float32 array under a trace (`jit`).
  """
  c = jnp.asarray(order).shape[0]
  masks = keep_masks(order, jnp.arange(1, c + 1))
  weights = masked_scales(gram, masks, ridge, cross) if least_squares else masks
  errors = masked_errors(gram, weights, cross, norm)
  if _concrete(errors):
    return np.asarray(errors, np.float64)
  return errors
