"""Least squares and relative error against explicit-sample NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thinet_jax import reconstruct, stats


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


@pytest.mark.parametrize("seed", range(3))
def test_centred_fit_is_least_squares_with_an_intercept_per_output(seed):
  """Scales from the centred Gram matrix and `mean_shift` are the least
  squares of yhat on the kept contributions plus one constant per output
  channel (the consumer's bias or BatchNorm mean); the centred relative
  error is that fit's residual over yhat's centred sum of squares."""
  rng = np.random.default_rng(seed)
  x = np.abs(_samples(seed, n=400, c=10)) + rng.uniform(0, 2, 10)  # means
  out = rng.integers(0, 4, 400)  # output channel of each sample
  x += 0.5 * out[:, None]  # means that differ per output channel
  y = x.sum(axis=1)
  keep = np.sort(rng.choice(10, 6, replace=False))
  design = np.concatenate([x[:, keep], np.eye(4)[out]], axis=1)
  coef = np.linalg.lstsq(design, y, rcond=None)[0]
  w_ref, shift_ref = coef[:6], coef[6:]
  residual = y - design @ coef
  y_centred = y - (np.bincount(out, y) / np.bincount(out))[out]
  sums = np.stack([x[out == d].sum(axis=0) for d in range(4)], axis=1)
  counts = np.bincount(out, minlength=4)
  with jax.enable_x64(True):
    gc = stats.centred_gram(x.T @ x, sums, counts)
    w = reconstruct.ridge_scales(jnp.asarray(gc), keep)
    np.testing.assert_allclose(w, w_ref, rtol=1e-7, atol=1e-9)
    shift = reconstruct.mean_shift(sums, counts, keep, w)
    np.testing.assert_allclose(shift, shift_ref, rtol=1e-7, atol=1e-9)
    e = reconstruct.relative_error(jnp.asarray(gc), keep, w)
    np.testing.assert_allclose(
      e, np.sum(residual**2) / np.sum(y_centred**2), rtol=1e-7
    )
    # Unit scales: the shift is the mean of the removed contributions.
    removed = np.setdiff1d(np.arange(10), keep)
    np.testing.assert_allclose(
      reconstruct.mean_shift(sums, counts, keep),
      [x[out == d][:, removed].sum(axis=1).mean() for d in range(4)],
      rtol=1e-10,
    )


@pytest.mark.parametrize("seed", range(3))
def test_another_target_is_least_squares_on_it(seed):
  """With a target t that is not sum_c xhat_c (the unpruned model's
  output), `GroupStats.target` gives the problem whose scales, error and
  shift are the least squares of t: plain, and with one intercept per
  output channel (centred)."""
  rng = np.random.default_rng(seed)
  x = np.abs(_samples(seed, n=400, c=10)) + rng.uniform(0, 2, 10)
  out = rng.integers(0, 4, 400)
  x += 0.5 * out[:, None]
  t = x @ rng.uniform(0.5, 1.5, 10) + rng.normal(size=400) + out
  keep = np.sort(rng.choice(10, 6, replace=False))
  sums = np.stack([x[out == d].sum(axis=0) for d in range(4)], axis=1)
  group_stats = stats.GroupStats(
    gram=x.T @ x, count=400, zero_fraction=np.zeros(10), images=400,
    sums=sums, output_counts=np.bincount(out, minlength=4), cross=x.T @ t,
    target_norm=float(t @ t), target_sums=np.bincount(out, t, minlength=4),
  )  # fmt: skip
  intercepts = np.eye(4)[out]
  for centred, design in (
    (False, x[:, keep]),
    (True, np.c_[x[:, keep], intercepts]),
  ):
    coef = np.linalg.lstsq(design, t, rcond=None)[0]
    residual = np.sum((t - design @ coef) ** 2)
    target = group_stats.target(centred=centred)
    with jax.enable_x64(True):
      w = reconstruct.ridge_scales(target.gram, keep, cross=target.cross)
      np.testing.assert_allclose(w, coef[:6], rtol=1e-7, atol=1e-9)
      e = reconstruct.relative_error(target.gram, keep, w, *target[1:])
      t_c = (
        t - np.bincount(out, t)[out] / np.bincount(out)[out] if centred else t
      )
      np.testing.assert_allclose(e, residual / np.sum(t_c**2), rtol=1e-7)
      if centred:
        shift = reconstruct.mean_shift(
          sums, group_stats.output_counts, keep, w, group_stats.target_sums
        )
        np.testing.assert_allclose(shift, coef[6:], rtol=1e-7, atol=1e-9)
  with pytest.raises(ValueError, match="both cross and norm"):
    reconstruct.relative_error(x.T @ x, keep, cross=x.T @ t)
  with pytest.raises(ValueError, match="does not match"):
    reconstruct.ridge_scales(x.T @ x, keep, cross=np.ones(3))


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
