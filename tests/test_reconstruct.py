"""Least squares and relative error against explicit-sample NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thinet_jax import reconstruct


def _samples(seed, n=500, c=12):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, c)) * rng.uniform(0.2, 2.0, c)
  x += rng.normal(size=(n, 1))  # correlated channels, as after ReLU
  return x


@pytest.mark.parametrize("seed", range(5))
def test_ridge_zero_is_lstsq_and_error_is_the_residual(seed):
  x = _samples(seed)
  y = x.sum(axis=1)  # yhat: the consumer's output minus bias
  keep = np.sort(np.random.default_rng(seed).choice(12, 7, replace=False))
  w_ref = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
  residual = np.sum((y - x[:, keep] @ w_ref) ** 2) / np.sum(y**2)
  with jax.enable_x64(True):
    gram = jnp.asarray(x.T @ x)
    w = reconstruct.ridge_scales(gram, keep, ridge=0.0)
    e = reconstruct.relative_error(gram, keep, w)
    np.testing.assert_allclose(w, w_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(e, residual, rtol=1e-8, atol=1e-12)
    unit = np.sum((y - x[:, keep].sum(axis=1)) ** 2) / np.sum(y**2)
    np.testing.assert_allclose(
      reconstruct.relative_error(gram, keep), unit, rtol=1e-8
    )
  # Float32 Gram: what the library uses by default.
  g32 = np.asarray(x.T @ x, np.float32)
  np.testing.assert_allclose(
    reconstruct.ridge_scales(g32, keep), w_ref, rtol=1e-3, atol=1e-4
  )
  assert 0.0 <= float(reconstruct.relative_error(g32, keep, w_ref)) <= 1.0


def test_ridge_is_the_regularised_closed_form():
  x = _samples(7)
  gram = (x.T @ x).astype(np.float32)
  keep = np.array([0, 3, 4, 9])
  lam = 25.0
  want = np.linalg.solve(
    gram[np.ix_(keep, keep)].astype(np.float64) + lam * np.eye(4),
    gram.sum(axis=1)[keep],
  )
  np.testing.assert_allclose(
    reconstruct.ridge_scales(gram, keep, lam), want, rtol=1e-4
  )
  with pytest.raises(ValueError, match="ridge must be >= 0"):
    reconstruct.ridge_scales(gram, keep, -1.0)


def test_singular_system_gives_finite_scales():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(100, 3))
  x = np.concatenate([base, base[:, :1] * 2.0], axis=1)  # channel 3 = 2 * ch 0
  gram = (x.T @ x).astype(np.float32)
  w = reconstruct.ridge_scales(gram, np.array([0, 1, 2, 3]), ridge=0.0)
  assert np.all(np.isfinite(w))
  e = reconstruct.relative_error(gram, np.array([0, 1, 2, 3]), w)
  assert abs(float(e)) < 1e-5
  # Drop the duplicate: channel 0 takes its weight, w0 = 1 + 2.
  w = reconstruct.ridge_scales(gram, np.array([0, 1, 2]))
  np.testing.assert_allclose(w, [3.0, 1.0, 1.0], rtol=1e-4)
  assert (
    abs(float(reconstruct.relative_error(gram, np.array([0, 1, 2]), w))) < 1e-5
  )


def test_bad_keep_and_scales():
  gram = np.eye(4, dtype=np.float32)
  with pytest.raises(ValueError, match="keep must be 1-D"):
    reconstruct.ridge_scales(gram, np.array([], np.int32))
  with pytest.raises(ValueError, match="do not match"):
    reconstruct.relative_error(gram, np.array([0, 1]), np.ones(3))
  with pytest.raises(ValueError, match="square"):
    reconstruct.ridge_scales(np.ones((4, 3)), np.array([0]))
