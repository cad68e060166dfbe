"""The dependency graph on a zoo of models that are not ours.

For every zoo model: the groups found equal the ones stated by hand; each
group pruned at keep 0.5 without least squares gives the logits of the
original model with those channels zeroed at every consumer; with least
squares, each consumer's measured relative error equals the one predicted
from its Gram matrix; the pruned model runs under jit, grad and
jax.export, at another batch size too.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo

from thinet_jax import depgraph
from thinet_jax.depgraph import surgery

NAMES = list(zoo.ZOO)


@functools.cache
def _traced(name):
  """The traced zoo model (built, initialised and traced once per run)."""
  fn, variables, x, groups, left_out = zoo.build(name)
  return depgraph.trace(fn, variables, x), variables, x, groups, left_out


def _close(a, b, tol):
  scale = max(1.0, float(jnp.max(jnp.abs(b))))
  return float(jnp.max(jnp.abs(a - b))) <= tol * scale


@pytest.mark.parametrize("name", NAMES)
def test_groups_found(name):
  model, _, _, groups, left_out = _traced(name)
  assert {g.name: g.width for g in model.groups} == groups
  found = {x.name: x.reason for x in model.left_out}
  for what, phrase in left_out.items():
    assert phrase in found[what], (what, found.get(what))
  for g in model.groups:
    assert g.consumers and all(c.kernel is not None for c in g.consumers)
  for group, producers in zoo.PRODUCERS.get(name, {}).items():
    assert set(model.group(group).producers) == producers
  # Names are unique: groups, left-out sets, and a group's consumers (one
  # per kernel: per-consumer statistics and scales are keyed by them).
  names = [g.name for g in model.groups] + [x.name for x in model.left_out]
  assert len(set(names)) == len(names), names
  for g in model.groups:
    kernels = {c.name: c.kernel for c in g.consumers}
    assert len(set(kernels.values())) == len(kernels), g.name


@pytest.mark.parametrize("name", NAMES)
def test_pruned_equals_zeroed(name):
  model, variables, x, _, _ = _traced(name)
  for k, group in enumerate(model.groups):
    keep = zoo.half(group.width, k)
    removed = np.setdiff1d(np.arange(group.width), keep)
    reference = model.fn(zoo.zeroed(variables, group, removed), x)
    pruned, small = depgraph.prune(model, variables, group, keep)
    assert _close(pruned.apply(small, x), reference, 1e-5), group.name
    for m in group.members:  # every member lost exactly the removed ones
      leaf = surgery.flat_leaves(small)[m.path]
      kept = np.sum((m.index < 0) | np.isin(m.index, keep))
      assert leaf.shape[m.axis] == kept


@pytest.mark.parametrize("name", NAMES)
def test_reconstruction_error_is_predicted(name):
  model, variables, x, _, _ = _traced(name)
  batches = [x, x[::-1] * 0.5]
  for group in model.groups:
    checked = zoo.reconstruction_check(model, variables, group, batches)
    assert checked.keys() == {c.name for c in group.consumers}
    for c, (measured, predicted) in checked.items():
      assert abs(measured - predicted) <= 1e-4, (group.name, c)


@pytest.mark.parametrize("name", NAMES)
def test_pruned_runs_under_jit_grad_export(name):
  """Every group pruned, one after another: the smaller model equals the
  original with all removed channels zeroed, under jit, at another batch
  size, through jax.export, and has finite non-zero gradients."""
  model, variables, x, _, _ = _traced(name)
  zeroed = variables
  for k, group in enumerate(model.groups):
    keep = zoo.half(group.width, k)  # groups are disjoint: widths still full
    zeroed = zoo.zeroed(
      zeroed, group, np.setdiff1d(np.arange(group.width), keep)
    )
    model, variables = depgraph.prune(model, variables, group, keep)
  reference = model.fn(zeroed, x)
  apply = jax.jit(model.apply)
  assert _close(apply(variables, x), reference, 1e-5)
  wider = jnp.concatenate([x, x[:2]])  # another batch size
  assert _close(apply(variables, wider)[: len(x)], reference, 1e-5)
  exported = jax.export.export(apply)(variables, x)
  assert _close(exported.call(variables, x), reference, 1e-5)
  grads = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x) ** 2)))(
    variables
  )
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_nnx_module_and_copy():
  module, x = zoo.nnx_model()
  reference = module(x)
  model, state = depgraph.trace_nnx(module, x)
  assert {g.name: g.width for g in model.groups} == {"stem": 6, "conv_a": 5}
  stream = model.group("stem")
  assert set(stream.producers) == {"stem", "conv_b"}
  assert _close(model.apply(state, x), reference, 1e-6)
  keep = np.array([0, 2, 3, 5])
  removed = np.setdiff1d(np.arange(6), keep)
  zeroed = model.fn(zoo.zeroed(state, stream, removed), x)
  pruned, small = depgraph.prune(model, state, stream, keep)
  assert _close(pruned.apply(small, x), zeroed, 1e-5)
  smaller = depgraph.nnx_module(pruned, small)
  assert smaller.stem.out_features == 4 and smaller.head.in_features == 4
  assert _close(smaller(x), zeroed, 1e-5)
  assert module.stem.kernel[...].shape[-1] == 6  # the original is intact


class _Mixing:
  """Small functions whose channels the graph must leave out."""

  @staticmethod
  def layout_swap(v, x):  # NHWC flattened, read back as channels-first
    y = jax.lax.conv_general_dilated(
      x, v["k1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = (
      jax.nn.relu(y).reshape(y.shape[0], -1).reshape(y.shape[0], y.shape[3], -1)
    )
    return jnp.einsum("bcs,cs->b", y, v["w"])[:, None] * v["out"]

  @staticmethod
  def cumsum(v, x):
    y = jax.nn.relu(jnp.einsum("bi,io->bo", x, v["k1"]))
    return jnp.cumsum(y, axis=-1) @ v["k2"]

  @staticmethod
  def sort(v, x):
    y = jax.nn.relu(jnp.einsum("bi,io->bo", x, v["k1"]))
    return jnp.sort(y, axis=-1) @ v["k2"]

  @staticmethod
  def softmax(v, x):
    y = jax.nn.softmax(x @ v["k1"], axis=-1)
    return y @ v["k2"]

  @staticmethod
  def input_residual(v, x):
    return jax.nn.relu(x + x @ v["k1"]) @ v["k2"]

  @staticmethod
  def no_consumer(v, x):
    q, k = x @ v["k1"], x @ v["k2"]  # only read by each other
    return jnp.einsum("bi,bi->b", q, k)[:, None]


def _vars(shapes):
  rng = np.random.default_rng(0)
  return {n: jnp.asarray(rng.normal(size=s), jnp.float32) for n, s in shapes}


LEFT_OUT = {
  "layout_swap": (
    [("k1", (3, 3, 2, 4)), ("w", (4, 36)), ("out", (1, 3))],
    (2, 6, 6, 2),
    "a reshape splits axes",
  ),
  "cumsum": ([("k1", (3, 5)), ("k2", (5, 2))], (2, 3), "cumsum runs along it"),
  "sort": ([("k1", (3, 5)), ("k2", (5, 2))], (2, 3), "primitive 'sort'"),
  "softmax": ([("k1", (3, 5)), ("k2", (5, 2))], (2, 3), "reduces over it"),
  "input_residual": (
    [("k1", (3, 3)), ("k2", (3, 2))],
    (2, 3),
    "comes from the function's input",
  ),
  "no_consumer": (
    [("k1", (3, 4)), ("k2", (3, 4))],
    (2, 3),
    "no convolution or dense layer reads",
  ),
}


@pytest.mark.parametrize("case", list(LEFT_OUT))
def test_left_out_with_reason(case):
  shapes, x_shape, phrase = LEFT_OUT[case]
  fn = getattr(_Mixing, case)
  x = jnp.ones(x_shape, jnp.float32)
  model = depgraph.trace(fn, _vars(shapes), x)
  assert model.groups == []
  reasons = [x.reason for x in model.left_out]
  assert any(phrase in r for r in reasons), reasons


def test_prune_rejects_bad_keep_and_variables():
  model, variables, x, _, _ = _traced("plain_cnn")
  group = model.group("features_0")
  with pytest.raises(ValueError, match="sorted and unique"):
    depgraph.prune(model, variables, group, np.array([3, 1]))
  with pytest.raises(ValueError, match=r"lie in \[0, 8\)"):
    depgraph.prune(model, variables, group, np.array([0, 8]))
  with pytest.raises(ValueError, match="unknown consumers"):
    depgraph.prune(model, variables, group, np.arange(4), {"nope": np.ones(4)})
  with pytest.raises(KeyError, match="groups: features_0"):
    model.group("features_9")


def _misuse():
  """(call, phrase) pairs: each call misuses the API on plain_cnn."""
  model, variables, x, _, _ = _traced("plain_cnn")
  other, _, _, _, _ = _traced("frozen_bn")
  group = model.group("features_1")
  params = variables["params"]
  missing = {**variables, "params": {k: v for k, v in params.items()
                                     if k != "classifier"}}  # fmt: skip
  extra = {**variables, "params": {**params, "more": {"w": jnp.ones(3)}}}
  wrong = jax.tree.map(lambda a: a, variables)
  wrong["params"]["features_1"] = {
    "kernel": jnp.ones((3, 3, 8, 7), jnp.float32)
  }

  def step(v=variables, g=group, **kw):
    return lambda: depgraph.prune_group(model, v, g, [x], **kw)

  return {
    "group of another model": (
      step(g=other.group("c1")), "not one of this model's groups"
    ),
    "a group name": (step(g="features_1"), "use model.group"),
    "missing leaf": (step(v=missing), "lack params/classifier/"),
    "extra leaf": (step(v=extra), "hold params/more/w"),
    "wrong shape": (step(v=wrong), "params/features_1/kernel has shape"),
    "nan ridge": (step(ridge=float("nan")), "ridge must be a finite"),
    "ratio as text": (step(keep_ratio="0.5"), "], a number"),
    "ratio None": (step(keep_ratio=None), "], a number"),
    "fractional count": (step(n_keep=3.5), "n_keep must be an integer"),
    "count too large": (step(n_keep=13), r"n_keep must be in \[1, 12\]"),
    "collect, other group": (
      lambda: depgraph.collect(model, variables, other.group("c1"), [x]),
      "not one of this model's groups",
    ),
    "prune, wrong shape": (
      lambda: depgraph.prune(model, wrong, group, np.arange(4)),
      "has shape",
    ),
  }  # fmt: skip


@pytest.mark.parametrize("case", list(_misuse()))
def test_api_misuse_is_one_value_error_before_any_work(case):
  call, phrase = _misuse()[case]
  with pytest.raises(ValueError, match=phrase):
    call()
