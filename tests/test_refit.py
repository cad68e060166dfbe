"""The least-squares refit of the consumers' kernels (`depgraph.refit_kernels`).

`solve` against NumPy's least squares on the stacked rows (with a column
of ones for the centred fit); on every zoo model, a consumer kernel
replaced by noise is refitted back to the planted one's outputs (the
pruned model's logits come back exactly); through `prune_group`, the
refit's error is never above the per-channel scales' on the same rows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo

from thinet_jax import depgraph
from thinet_jax.depgraph import refit, surgery
from thinet_jax.options import PruneOptions


def _moments(v, t):
  return v.T @ v, v.T @ t, v.sum(0), t.sum(0), float((t * t).sum()), len(v)


def test_solve_matches_numpy_least_squares():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(300, 7)) + 2.0  # a mean, as post-ReLU inputs have
  t = v @ rng.normal(size=(7, 3)) + [1.0, -2.0, 0.5]
  t += 0.1 * rng.normal(size=t.shape)
  ones = np.ones((len(v), 1))
  full = np.linalg.lstsq(np.hstack([v, ones]), t, rcond=None)[0]
  w, b, err = refit.solve(*_moments(v, t), centred=True)
  np.testing.assert_allclose(w, full[:7], atol=1e-8)
  np.testing.assert_allclose(b, full[7], atol=1e-8)
  residual = t - v @ full[:7] - full[7]
  assert err == pytest.approx((residual**2).sum() / (t**2).sum(), rel=1e-6)
  plain = np.linalg.lstsq(v, t, rcond=None)[0]
  w, b, err = refit.solve(*_moments(v, t), centred=False)
  np.testing.assert_allclose(w, plain, atol=1e-8)
  assert not b.any()
  assert err == pytest.approx(
    ((t - v @ plain) ** 2).sum() / (t**2).sum(), rel=1e-6
  )
  ridge = 3.0  # the ridge's normal equations
  w, _, _ = refit.solve(*_moments(v, t), centred=False, ridge=ridge)
  np.testing.assert_allclose(
    (v.T @ v + ridge * np.eye(7)) @ w, v.T @ t, atol=1e-8
  )


def _batches(x, n=3):
  rng = np.random.default_rng(5)
  shape = (16, *x.shape[1:])
  return [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(n)]


# The fast tier refits a plain chain, a residual stream and a concatenation;
# the rest of the zoo runs with the slow tests.
FAST = ("plain_cnn", "examples_resnet", "densenet_block")


@pytest.mark.parametrize(
  "name",
  [
    n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in zoo.ZOO
  ],
)
def test_a_planted_kernel_is_refitted_back(name):
  """The pruned model's refittable consumer kernels replaced by noise and
  refitted with the pruned model itself as the target: every consumer's
  output, and so the logits, come back (an exact target)."""
  fn, variables, x, _, _ = zoo.build(name)
  model = depgraph.trace(fn, variables, x)
  batches = _batches(x)
  rng = np.random.default_rng(1)
  for k, group in enumerate(model.groups):
    pruned, small = depgraph.prune(model, variables, group,
                                   zoo.half(group.width, k))  # fmt: skip
    refittable = {c.name for c in refit.refitted(model, group)}
    leaves = surgery.flat_leaves(small)
    for c in group.consumers:
      if c.name in refittable:
        shape = leaves[c.kernel].shape
        leaves[c.kernel] = jnp.asarray(rng.normal(size=shape), jnp.float32)
    noisy = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(small), list(leaves.values())
    )
    new, errors = refit.refit_kernels(
      pruned, noisy, group, batches, (pruned, small), centred=False
    )
    assert set(errors) == refittable, group.name
    assert all(e < 1e-4 for e in errors.values()), (group.name, errors)
    if len(refittable) == len(group.consumers):
      for b in batches:
        want, got = pruned.apply(small, b), pruned.apply(new, b)
        scale = max(1.0, float(jnp.max(jnp.abs(want))))
        assert float(jnp.max(jnp.abs(got - want))) < 1e-2 * scale, group.name


def test_which_consumers_are_refitted():
  """The planted test above is not vacuous: the plain CNN's consumers are
  all refitted; a depthwise convolution (one filter per channel) and a
  kernel applied twice (it feeds itself) are not."""
  expect = {
    "plain_cnn": lambda names: (
      names == {"features_1", "features_2", "classifier"}
    ),
    "mobilenet_v2": lambda names: not any("depthwise" in n for n in names),
    "shared_conv": lambda names: "shared" not in names and "fc" in names,
  }
  for name, check in expect.items():
    fn, variables, x, _, _ = zoo.build(name)
    model = depgraph.trace(fn, variables, x)
    names = {c.name for g in model.groups for c in refit.refitted(model, g)}
    assert check(names), (name, names)


@pytest.mark.parametrize("centred", [False, True])
def test_prune_group_refit_is_never_worse_than_the_scales(centred):
  """On the same rows (exhaustive statistics over the same batches, the
  model's own output as the target) the kernel refit contains the scales'
  solution, so its error is at most theirs; the record says what was
  refitted, and the refitted model's logits differ from the scales'."""
  fn, variables, x, _, _ = zoo.build("plain_cnn")
  model = depgraph.trace(fn, variables, x)
  batches = _batches(x)
  for group in model.groups:
    common = dict(n_keep=group.width // 2, key=jax.random.key(3),
                  mode="exhaustive", centred=centred)  # fmt: skip
    _, v_scales, rec_scales = depgraph.prune_group(
      model, variables, group, batches, **common
    )
    _, v_kernel, rec_kernel = depgraph.prune_group(
      model, variables, group, batches, refit="kernel", **common
    )
    assert rec_kernel.kept == rec_scales.kept
    assert rec_kernel.refitted == sorted({c.name for c in group.consumers})
    assert rec_kernel.scales == {} and rec_kernel.refit == "kernel"
    for c, e in rec_kernel.errors.items():
      assert e <= rec_scales.errors[c] + 1e-5, (group.name, c)
    assert any(e < rec_scales.errors[c] - 1e-4
               for c, e in rec_kernel.errors.items()), group.name  # fmt: skip


def test_a_kernel_applied_twice_keeps_its_scales_under_refit():
  """prune_group(refit="kernel") on the conv applied twice (it reads and
  writes the stem's channels): its scales are folded as without the
  refit, and the dense layer after it is refitted."""
  fn, variables, x, _, _ = zoo.build("shared_conv")
  model = depgraph.trace(fn, variables, x)
  group = model.group("stem")
  common = dict(n_keep=3, key=jax.random.key(0), mode="exhaustive")
  _, v_scales, scaled = depgraph.prune_group(
    model, variables, group, _batches(x), **common
  )
  _, v_kernel, refitted = depgraph.prune_group(
    model, variables, group, _batches(x), refit="kernel", **common
  )
  assert refitted.refitted == ["fc"]
  assert refitted.scales == {"shared": scaled.scales["shared"]}
  shared = surgery.flat_leaves(v_kernel)["params/shared/kernel"]
  np.testing.assert_array_equal(
    shared, surgery.flat_leaves(v_scales)["params/shared/kernel"]
  )


def test_refit_options_are_checked():
  with pytest.raises(ValueError, match="refit must be one of"):
    PruneOptions(refit="weights").check()
  with pytest.raises(ValueError, match="least_squares=True"):
    PruneOptions(refit="kernel", least_squares=False).check()
  fn, variables, x, _, _ = zoo.build("plain_cnn")
  model = depgraph.trace(fn, variables, x)
  group = model.groups[0]
  stats = depgraph.collect(model, variables, group, [x])
  with pytest.raises(ValueError, match="use depgraph.prune_group"):
    depgraph.prune_step(
      model, variables, group, stats, 2, PruneOptions(refit="kernel")
    )
