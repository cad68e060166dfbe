"""The project's own VGG and ResNet presets read by the dependency graph.

The graph rediscovers every hand-written group of `groups.groups` (same
producer, width, consumer and parameter leaves) for every preset, and
finds the groups the hand-written rule avoids: VGG's hidden dense layers,
ResNet's stem and its stage groups (every block's branch2c and the
shortcut of a stage, one residual stream). Surgery through the graph
gives the same model as the hand-written surgery.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thinet_jax import depgraph, models, presets, surgery
from thinet_jax import groups as groups_lib


def _traced(name, variables=None, batch=2):
  spec = presets.get(name)
  size = presets.IMAGE_SIZE[name]
  if variables is None:  # shapes are enough to trace
    variables = jax.eval_shape(
      lambda: models.init(spec, jax.random.key(0), size)
    )
  x = jax.ShapeDtypeStruct((batch, size, size, spec.in_channels), jnp.float32)
  return spec, depgraph.trace_linen(
    models.build(spec), variables, x, train=False
  )


@pytest.mark.parametrize("name", presets.names())
def test_graph_rediscovers_hand_written_groups(name):
  spec, model = _traced(name)
  found = {g.name: g for g in model.groups}
  for hand in groups_lib.groups(spec):
    g = found.pop(hand.name)
    assert g.width == hand.width
    assert g.producers == (hand.producer,)
    assert [c.name for c in g.consumers] == [hand.consumer]
    assert {m.path for m in g.members} == set(hand.param_leaves)
    assert g.member(f"params/{hand.producer}/kernel").axis == 3
    consumer = g.consumers[0]
    assert consumer.kind == (
      "conv" if hand.consumer_kind == "conv" else "dense"
    )
  if spec.family == "vgg":
    expected = {"fc6", "fc7"} if spec.head == "fc" else set()
    assert set(found) == expected
    return
  blocks = spec.resnet_block_names()
  stages, start = [], 0
  for n in spec.stage_sizes:
    stages.append(blocks[start : start + n])
    start += n
  assert set(found) == {"conv1"} | {f"{s[0]}/branch2c" for s in stages}
  for stage in stages:  # one group: every branch2c and the shortcut
    g = found[f"{stage[0]}/branch2c"]
    assert set(g.producers) == {f"{b}/branch2c" for b in stage} | {
      f"{stage[0]}/branch1"
    }
    readers = {c.name for c in g.consumers}
    assert {f"{b}/branch2a" for b in stage[1:]} <= readers


def test_stage_group_prunes_and_runs():
  spec = presets.get("resnet-fmnist")
  size = presets.IMAGE_SIZE["resnet-fmnist"]
  variables = models.init(spec, jax.random.key(0), size)
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
    lambda v: v + jnp.asarray(rng.normal(0, 0.05, v.shape), v.dtype), variables
  )
  x = jnp.asarray(rng.normal(size=(2, size, size, 1)), jnp.float32)
  _, model = _traced("resnet-fmnist", variables)
  stage = [g for g in model.groups if len(g.producers) > 1][0]
  keep = np.arange(0, stage.width, 2)
  pruned, small = depgraph.prune(model, variables, stage, keep)
  out = jax.jit(pruned.apply)(small, x)
  assert out.shape == (2, spec.num_classes)
  for path in (f"params/{p}/kernel" for p in stage.producers):
    assert surgery_leaf(small, path).shape[-1] == len(keep)


def surgery_leaf(variables, path):
  return depgraph.surgery.flat_leaves(variables)[path]


def test_graph_surgery_equals_hand_written_surgery():
  name = "vgg16-fmnist"
  spec = presets.get(name)
  size = presets.IMAGE_SIZE[name]
  variables = models.init(spec, jax.random.key(1), size)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, size, size, 1)))
  _, model = _traced(name, variables)
  hand = groups_lib.get(spec, "conv2_1")
  keep = np.array([0, 3, 4, 7, 9, 10, 15])
  scales = np.linspace(0.5, 1.5, len(keep))
  shift = np.linspace(-1, 1, hand.width)  # the consumer's outputs
  spec2, hand_vars = surgery.prune(spec, variables, hand, keep, scales, shift)
  group = model.group("conv2_1")
  pruned, graph_vars = depgraph.prune(
    model, variables, group, keep, scales, {"conv2_2": shift}
  )
  flat_hand = depgraph.surgery.flat_leaves(hand_vars)
  flat_graph = depgraph.surgery.flat_leaves(graph_vars)
  assert flat_hand.keys() == flat_graph.keys()
  for path, leaf in flat_hand.items():
    np.testing.assert_allclose(flat_graph[path], leaf, rtol=1e-6, atol=1e-7)
  expected = models.build(spec2).apply(hand_vars, x, train=False)
  np.testing.assert_allclose(
    pruned.apply(graph_vars, x), expected, rtol=1e-5, atol=1e-5
  )
