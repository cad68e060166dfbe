"""The flat public API: traceable solves, the criterion registry, static
arguments under jit, and the package's import layering."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thinet_jax as tj
from tests import zoo
from thinet_jax import select, stats

PACKAGE = pathlib.Path(tj.__file__).parent


def _gram(c=7, n=40, seed=0):
  x = np.random.default_rng(seed).normal(size=(n, c))
  return x.T @ x, x


def test_error_curve_and_masked_scales_are_traceable():
  gram, _ = _gram()
  order = jnp.asarray(np.random.default_rng(1).permutation(7))
  eager = tj.error_curve(gram, order)
  jitted = jax.jit(tj.error_curve, static_argnames="least_squares")(gram, order)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
  masks = tj.keep_masks(order, jnp.array([2, 5]))
  np.testing.assert_allclose(
    jax.jit(tj.masked_scales)(gram, masks), tj.masked_scales(gram, masks),
    rtol=1e-5, atol=1e-6,
  )  # fmt: skip


def test_error_curve_of_another_target_equals_numpy_least_squares():
  """For a target t other than the own output, e(n) is the plain NumPy
  least-squares residual of t on the kept columns, relative to |t|^2."""
  gram, x = _gram(c=6, n=50, seed=2)
  t = x @ np.linspace(0.5, 1.5, 6) + np.random.default_rng(3).normal(size=50)
  order = np.random.default_rng(4).permutation(6)
  curve = tj.error_curve(gram, order, cross=x.T @ t, norm=t @ t)
  for n in range(1, 7):
    kept = np.sort(order[6 - n :])
    w, *_ = np.linalg.lstsq(x[:, kept], t, rcond=None)
    expect = np.sum((t - x[:, kept] @ w) ** 2) / (t @ t)
    np.testing.assert_allclose(curve[n - 1], expect, rtol=2e-4, atol=1e-6)


def test_a_registered_criterion_drives_the_graph_step():
  """A planted criterion (remove the lowest indices first) decides the
  kept set of `prune_step`; the name is then taken by every path."""
  calls = []

  def lowest_first(inputs):
    calls.append(inputs.gram.shape)
    return jnp.arange(inputs.gram.shape[0], dtype=jnp.int32)

  tj.register_criterion("lowest_first", lowest_first)
  try:
    with pytest.raises(ValueError, match="exists"):
      tj.register_criterion("lowest_first", lowest_first)
    apply_fn, variables, x, _, _ = zoo.build("plain_cnn")
    model = tj.trace(apply_fn, variables, x)
    group = model.groups[0]
    st = tj.collect(model, variables, group, [x])
    options = tj.PruneOptions(criterion="lowest_first", mode="exhaustive")
    _, _, record = tj.prune_step(model, variables, group, st, 3, options)
    width = group.width
    assert record.kept == list(range(width - 3, width))
    assert calls == [(width, width)]
  finally:
    del select.CRITERIA["lowest_first"]


def test_conv_gram_under_jit_with_its_static_arguments():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
  static = ("strides", "padding", "mode", "samples_per_image", "sums")
  fn = jax.jit(stats.conv_gram, static_argnames=static)
  got = fn(x, k, strides=(2, 2), padding=1)
  want = stats.conv_gram(x, k, strides=(2, 2), padding=1)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  assert int(got[1]) == int(want[1])


def imports_of(path: pathlib.Path) -> set[str]:
  """Every module a file imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      if node.module == "thinet_jax":
        found.update(f"thinet_jax.{a.name}" for a in node.names)
  return found


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts).removesuffix(".__init__")


def import_graph() -> dict[str, list[str]]:
  """Module -> the package modules and third-party roots it imports."""
  graph = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    deps = imports_of(path)
    graph[module_name(path)] = sorted(
      d if d.startswith("thinet_jax") else d.split(".")[0] for d in deps
    )
  return graph


METHOD = (
  "thinet_jax.select", "thinet_jax.reconstruct", "thinet_jax.solve",
  "thinet_jax.stats", "thinet_jax.options", "thinet_jax.groups",
  "thinet_jax.surgery", "thinet_jax.profile", "thinet_jax.depgraph",
  "thinet_jax.allocate",
)  # fmt: skip
TRAINING = (
  "thinet_jax.train", "thinet_jax.variants", "thinet_jax.checkpoints",
  "thinet_jax.batchnorm", "thinet_jax.optim", "optax", "orbax",
)  # fmt: skip
PRUNING = (*METHOD, "thinet_jax.pipeline", "thinet_jax.procedure")
MODELS = ("thinet_jax.models", "thinet_jax.spec")


def _within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_method_modules_import_no_training_and_models_no_pruning():
  graph = import_graph()
  assert set(METHOD) <= set(graph), "a listed module no longer exists"
  bad = []
  for module, deps in graph.items():
    if _within(module, METHOD):
      bad += [(module, d) for d in deps if _within(d, TRAINING)]
    if _within(module, MODELS):
      bad += [(module, d) for d in deps if _within(d, PRUNING)]
  assert not bad, f"layering broken (module, import): {bad}"
  # The check itself can fail: a planted violation is caught.
  planted = {"thinet_jax.select": ["optax"]}
  assert any(_within(d, TRAINING) for d in planted["thinet_jax.select"])


def test_the_top_level_api_imports_no_training_layer():
  import subprocess
  import sys

  code = (
    "import sys, thinet_jax; "
    "print(any(m.split('.')[0] in ('optax', 'orbax') or m == "
    "'thinet_jax.train' for m in sys.modules))"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "False"
