"""Selection: the greedy against the official per-candidate loop; baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import greedy_speed
from thinet_jax import select


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
  with pytest.raises(KeyError, match="known: thinet, random, weight_sum, apoz"):
    select.removal_order("l2", select.SelectionInputs())
  with pytest.raises(ValueError, match="needs SelectionInputs.gram"):
    select.removal_order("thinet", select.SelectionInputs())
