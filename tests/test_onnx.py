"""ONNX export: onnxruntime on CPU gives the JAX logits of every model kind,
pruned or not, in both input layouts."""

import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest

from tests import zoo
from thinet_jax import (
  depgraph,
  factories,
  groups,
  models,
  onnx_export,
  presets,
  surgery,
)
from thinet_jax.options import PruneOptions

from conftest import SPECS, random_variables


def _run(proto, x):
  session = onnxruntime.InferenceSession(
    proto.SerializeToString(), providers=["CPUExecutionProvider"]
  )
  return session.run(None, {"images": x})[0]


def _close(ours, theirs):
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


def _half(spec, variables, seed=0):
  """Every paper group at half width, random kept sets and scales."""
  rng = np.random.default_rng(seed)
  for g in groups.paper_groups(spec):
    g = groups.get(spec, g.name)
    n = max(1, g.width // 2)
    keep = np.sort(rng.choice(g.width, n, replace=False))
    spec, variables = surgery.prune(
      spec, variables, g, keep, rng.uniform(0.5, 1.5, n).astype(np.float32)
    )
  return spec, variables


@pytest.mark.parametrize("name", ["vgg16-fmnist", "resnet-fmnist"])
@pytest.mark.parametrize("pruned", [False, True])
def test_fmnist_models_match_jax_in_onnxruntime(name, pruned):
  spec = presets.get(name)
  variables = random_variables(spec, 32, seed=1)
  if pruned:
    spec, variables = _half(spec, variables)
  x = np.random.default_rng(2).normal(size=(3, 32, 32, 1)).astype(np.float32)
  want = np.asarray(models.build(spec).apply(variables, x))
  proto = onnx_export.to_onnx(spec, variables, 32)
  _close(_run(proto, x.transpose(0, 3, 1, 2)), want)
  nhwc = onnx_export.to_onnx(spec, variables, 32, input_layout="nhwc")
  _close(_run(nhwc, x), want)
  # Layers keep their names in the graph.
  first = "conv1_1" if name == "vgg16-fmnist" else "res2a/branch2a"
  assert f"{first}/Conv" in {n.name for n in proto.graph.node}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_layer_kind_matches_jax(name):
  """Flatten and GAP heads, with and without BatchNorm; both ResNet stride
  placements; at 8x8 so the flatten head sees a 2x2 or 4x4 map."""
  spec = SPECS[name]
  variables = random_variables(spec, 8, seed=3)
  x = np.random.default_rng(4).normal(size=(2, 8, 8, spec.in_channels))
  x = x.astype(np.float32)
  want = np.asarray(models.build(spec).apply(variables, x))
  proto = onnx_export.to_onnx(spec, variables, 8, input_layout="nhwc")
  _close(_run(proto, x), want)


def test_gap_head_surgery_then_export():
  spec = presets.get("vgg16-fmnist")
  variables = random_variables(spec, 32, seed=5)
  rng = np.random.default_rng(6)
  batches = [{"image": rng.normal(size=(16, 32, 32, 1)).astype(np.float32)}]
  spec, variables, _ = surgery.gap_head(spec, variables, batches)
  x = batches[0]["image"][:3]
  want = np.asarray(models.build(spec).apply(variables, x))
  _close(_run(onnx_export.to_onnx(spec, variables, 32, input_layout="nhwc"),
              x), want)  # fmt: skip


def test_bad_layout_is_an_error():
  spec = SPECS["vgg_bn_gap"]
  with pytest.raises(ValueError, match="input_layout"):
    onnx_export.to_onnx(spec, random_variables(spec, 8), 8, input_layout="x")


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_every_zoo_model_pruned_or_not_in_onnxruntime(name):
  """User-written models (residual adds, concatenations, depthwise and
  grouped convolutions, LayerNorm / GroupNorm, gates, shared weights)
  before and after pruning their first group, at a batch size neither
  trace used: ONNX Runtime gives the JAX logits."""
  apply_fn, variables, x, _, _ = zoo.build(name)
  model = depgraph.trace(apply_fn, variables, x)
  group = model.groups[0]
  per_consumer = depgraph.collect(model, variables, group, [x])
  small_model, small, _ = depgraph.prune_step(
    model, variables, group, per_consumer, max(1, group.width // 2),
    PruneOptions(),
  )  # fmt: skip
  rng = np.random.default_rng(7)
  x5 = rng.normal(size=(5, *x.shape[1:])).astype(np.float32)
  for fn, v in ((apply_fn, variables), (small_model.apply, small)):
    proto = onnx_export.from_function(fn, v, x.shape[1:], input_layout="nhwc")
    _close(_run(proto, x5), np.asarray(fn(v, x5)))


def test_a_pruned_factory_model_exports_with_a_symbolic_batch():
  net, variables = factories.build("tests.user_nets:linen_cnn", 16, 1)
  model = net.traced
  group = model.groups[0]
  x = np.random.default_rng(8).normal(size=(4, 16, 16, 1)).astype(np.float32)
  per_consumer = depgraph.collect(model, variables, group, [x])
  small_model, small, _ = depgraph.prune_step(
    model, variables, group, per_consumer, 2, PruneOptions()
  )
  pruned = factories.pruned(net, small_model)
  proto = onnx_export.to_onnx(pruned, small, 16)
  batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
  assert batch.dim_param == "batch"
  for n in (1, 3):
    _close(_run(proto, x[:n].transpose(0, 3, 1, 2)),
           np.asarray(pruned.infer(small, x[:n])))  # fmt: skip
  fixed = onnx_export.to_onnx(pruned, small, 16, batch_size=3)
  assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3


def test_an_untranslatable_primitive_is_named():
  def fn(v, x):
    return jnp.cumsum(x * v["w"], axis=1)

  with pytest.raises(onnx_export.OnnxExportError, match="cumsum"):
    onnx_export.from_function(fn, {"w": jnp.ones(3)}, (3,), input_layout="nhwc")
