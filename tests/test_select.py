"""Selection: the greedy against the official per-candidate loop; baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import greedy_speed
from thinet_jax import reconstruct, select


def official_greedy(x):
  """The official loop (transcribed in the benchmark), run to the end."""
  return np.array(greedy_speed.official_removals(x, x.shape[1]))


def _instance(seed):
  rng = np.random.default_rng(seed)
  c = int(rng.integers(2, 24))
  n = int(rng.integers(c, 300))
  # Contributions with a shared component and mixed scales, like real ones.
  x = rng.normal(size=(n, c)) * rng.uniform(0.1, 2.0, c)
  x += rng.normal(size=(n, 1)) * rng.uniform(-1, 1, c)
  return x


@pytest.mark.parametrize("seed", range(40))
def test_greedy_order_equals_the_official_loop(seed):
  x = _instance(seed)
  want = official_greedy(x)
  with jax.enable_x64(True):  # Same arithmetic precision as the reference.
    got = select.greedy_order(jnp.asarray(x.T @ x))
  np.testing.assert_array_equal(got, want)


def test_greedy_order_float32_agrees_on_real_sized_problems():
  x = _instance(123)
  g32 = np.asarray(x.T @ x, np.float32)
  np.testing.assert_array_equal(select.greedy_order(g32), official_greedy(x))


def brute_forward(x, y=None):
  """Forward selection by explicit least squares: every step refits every
  candidate's kept set with np.linalg.lstsq and keeps the best. The
  target y defaults to the consumer's own output, x.sum(axis=1)."""
  y = x.sum(axis=1) if y is None else y
  kept, left = [], list(range(x.shape[1]))
  while left:
    residuals = [
      np.sum((y - x[:, kept + [c]] @ np.linalg.lstsq(
        x[:, kept + [c]], y, rcond=None)[0]) ** 2)
      for c in left
    ]  # fmt: skip
    best = left[int(np.argmin(residuals))]
    kept.append(best)
    left.remove(best)
  return np.array(kept[::-1])  # removal order: the last kept goes first


@pytest.mark.parametrize("seed", range(12))
def test_forward_order_equals_explicit_least_squares(seed):
  x = _instance(seed)[:, :12]
  if x.shape[0] <= x.shape[1]:  # full column rank for the reference
    x = np.concatenate([x, x + 0.1], axis=0)
  want = brute_forward(x)
  with jax.enable_x64(True):
    got = select.forward_order(jnp.asarray(x.T @ x))
  np.testing.assert_array_equal(got, want)
  # Float32, jitted, as the library runs it: same kept sets.
  g32 = np.asarray(x.T @ x, np.float32)
  for n in (1, x.shape[1] // 2):
    np.testing.assert_array_equal(
      np.sort(select.forward_order(g32)[-n:]), np.sort(want[-n:])
    )


@pytest.mark.parametrize("seed", range(4))
def test_forward_order_for_another_target(seed):
  """With cross = X^T t, forward selection fits t (the unpruned model's
  output) instead of sum_c xhat_c."""
  x = _instance(seed)[:, :10]
  if x.shape[0] <= x.shape[1]:
    x = np.concatenate([x, x + 0.1], axis=0)
  t = x @ np.random.default_rng(seed).uniform(-1, 2, x.shape[1])
  want = brute_forward(x, t)
  assert not np.array_equal(want, brute_forward(x))  # A different problem.
  with jax.enable_x64(True):
    got = select.forward_order(jnp.asarray(x.T @ x), jnp.asarray(x.T @ t))
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="does not match"):
    select.forward_order(x.T @ x, np.ones(3))


def test_forward_keeps_a_duplicate_last_and_refits():
  """Channel 3 = 2 x channel 0: once 0 is kept, 3 adds nothing, so it is
  removed first; the paper's greedy, scoring unit scales, removes the
  smallest channel instead and loses more after least squares."""
  rng = np.random.default_rng(1)
  base = rng.normal(size=(200, 3)) + rng.normal(size=(200, 1))
  x = np.concatenate([base, 2 * base[:, :1]], axis=1)
  gram = (x.T @ x).astype(np.float32)
  order = np.asarray(select.forward_order(gram))
  assert order[0] in (0, 3) and set(order[1:]) == {0, 1, 2, 3} - {order[0]}
  keep = np.sort(order[1:])
  w = reconstruct.ridge_scales(gram, keep)
  assert float(reconstruct.relative_error(gram, keep, w)) < 1e-5
  greedy_keep = np.sort(np.asarray(select.greedy_order(gram))[1:])
  gw = reconstruct.ridge_scales(gram, greedy_keep)
  assert float(reconstruct.relative_error(gram, greedy_keep, gw)) > 1e-3


def test_greedy_ties_go_to_the_lowest_index():
  gram = np.eye(4, dtype=np.float32)
  np.testing.assert_array_equal(select.greedy_order(gram), [0, 1, 2, 3])


def test_greedy_does_not_recompile():
  select.greedy_order(np.eye(7, dtype=np.float32))
  before = select._greedy._cache_size()
  x = np.random.default_rng(0).normal(size=(20, 7)).astype(np.float32)
  select.greedy_order(x.T @ x)
  select.greedy_order(2 * x.T @ x)
  assert select._greedy._cache_size() == before


def test_greedy_under_jit_and_vmap():
  x = np.random.default_rng(0).normal(size=(3, 30, 6)).astype(np.float32)
  grams = np.einsum("bnc,bnk->bck", x, x)
  batched = jax.jit(jax.vmap(select.greedy_order))(grams)
  for g, order in zip(grams, batched, strict=True):
    np.testing.assert_array_equal(order, select.greedy_order(g))


def test_keep_count_follows_the_official_rounding():
  assert select.keep_count(64, 0.5) == 32
  assert select.keep_count(64, 0.7) == int(64 * 0.7) == 44
  assert select.keep_count(3, 0.1) == 1  # at least one
  assert select.keep_count(10, 1.0) == 10
  for bad in (0.0, -0.5, 1.5, float("nan")):
    with pytest.raises(ValueError, match="keep_ratio must be in"):
      select.keep_count(10, bad)


def test_keep_indices_is_the_sorted_suffix():
  order = jnp.array([3, 0, 4, 1, 2])
  np.testing.assert_array_equal(select.keep_indices(order, 2), [1, 2])
  np.testing.assert_array_equal(select.keep_indices(order, 5), [0, 1, 2, 3, 4])
  for bad in (0, 6):
    with pytest.raises(ValueError, match="n_keep must be in"):
      select.keep_indices(order, bad)


def test_bad_grams_are_rejected():
  with pytest.raises(ValueError, match="square"):
    select.greedy_order(np.ones((3, 4)))
  with pytest.raises(ValueError, match="square"):
    select.greedy_order(np.ones(3))
  asym = np.eye(3)
  asym[0, 1] = 1.0
  with pytest.raises(ValueError, match="not symmetric"):
    select.greedy_order(asym)
  nan = np.eye(3)
  nan[1, 1] = np.nan
  with pytest.raises(ValueError, match="not symmetric"):
    select.greedy_order(nan)


def test_baselines():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
  apoz = rng.uniform(size=6).astype(np.float32)
  inputs = select.SelectionInputs(
    zero_fraction=apoz, producer_kernel=kernel, key=jax.random.key(3)
  )
  l1 = np.abs(kernel).sum(axis=(0, 1, 2))
  np.testing.assert_array_equal(
    select.removal_order("weight_sum", inputs), np.argsort(l1)
  )
  np.testing.assert_array_equal(
    select.removal_order("apoz", inputs), np.argsort(-apoz)
  )
  r1 = select.removal_order("random", inputs)
  r2 = select.removal_order("random", inputs)
  np.testing.assert_array_equal(r1, r2)  # seeded
  assert sorted(np.asarray(r1).tolist()) == list(range(6))
  other = select.SelectionInputs(zero_fraction=apoz, key=jax.random.key(4))
  assert not np.array_equal(select.removal_order("random", other), r1)


def test_criteria_registry_errors():
  known = "thinet, thinet_centred, forward, forward_centred, random, " + (
    "weight_sum, weight_sum_original, apoz"
  )
  with pytest.raises(KeyError, match=f"known: {known}"):
    select.removal_order("l2", select.SelectionInputs())
  with pytest.raises(ValueError, match="needs SelectionInputs.gram"):
    select.removal_order("thinet", select.SelectionInputs())
  with pytest.raises(ValueError, match="needs SelectionInputs.centred_gram"):
    select.removal_order("forward_centred", select.SelectionInputs())
