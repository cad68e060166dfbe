"""Models: every preset runs; outputs and captured inputs match NumPy."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thinet_jax import models, presets, profile
from thinet_jax.spec import ModelSpec

import reference
from conftest import random_variables

SMALL_SPECS = {
  "vgg_fc_bn": ModelSpec(
    family="vgg",
    layers=(4, "M", 6, 5, "M"),
    head="fc",
    fc_widths=(7,),
    dropout=0.5,
    batch_norm=True,
    num_classes=3,
    in_channels=2,
  ),
  "vgg_fc_plain": ModelSpec(
    family="vgg",
    layers=(4, 6, "M", 5),
    head="fc",
    fc_widths=(),
    num_classes=3,
    in_channels=2,
  ),
  "vgg_gap": ModelSpec(
    family="vgg",
    layers=(4, "M", 6, 5),
    head="gap",
    batch_norm=True,
    num_classes=3,
    in_channels=2,
  ),
  **{
    f"resnet_{placement}_{stem}": presets.resnet_thinet(
      1.0,
      stage_sizes=(2, 1),
      inner=(3, 5),
      out=(8, 12),
      stem=stem,
      stem_width=4,
      stride_placement=placement,
      num_classes=3,
      in_channels=2,
    )
    for placement in ("caffe", "torchvision")
    for stem in ("small", "small_pool", "imagenet")
  },
}


@pytest.mark.parametrize("name", sorted(SMALL_SPECS))
def test_forward_and_captures_match_numpy_reference(name):
  spec = SMALL_SPECS[name]
  size = 12
  variables = random_variables(spec, size)
  x = np.random.default_rng(1).normal(size=(2, size, size, 2))
  ref = reference.vgg if spec.family == "vgg" else reference.resnet
  want_logits, want_inputs, want_outputs = ref(spec, variables, x)

  logits = jax.jit(models.build(spec).apply)(variables, jnp.asarray(x))
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)

  # Captured under jit, by name, every consumer of the spec.
  capture = jax.jit(
    lambda v, x: models.consumer_inputs(spec, v, x), static_argnums=()
  )
  got = capture(variables, jnp.asarray(x))
  assert list(got) == models.consumer_names(spec)
  assert set(got) == set(want_inputs)
  for path, want in want_inputs.items():
    if path == "fc6":  # what the dense layer reads: the flattened map
      want = want.reshape(len(want), -1)
    elif path == "fc":  # the GAP features
      want = want.mean((1, 2))
    np.testing.assert_allclose(got[path], want, rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(got[path]) >= 0), f"{path} is post-ReLU"
  del want_outputs


def test_capture_subset_and_unknown_name():
  spec = SMALL_SPECS["vgg_gap"]
  variables = random_variables(spec, 8)
  x = jnp.ones((1, 8, 8, 2))
  got = models.consumer_inputs(spec, variables, x, names=["fc"])
  assert list(got) == ["fc"] and got["fc"].shape == (1, 5)  # GAP features
  with pytest.raises(KeyError, match="conv1_1"):
    models.consumer_inputs(spec, variables, x, names=["conv1_1"])


def test_stride_placement_moves_the_downsampling():
  # caffe: res3a/branch2a already halves the map, so branch2b's input is
  # small; torchvision: branch2a keeps it, branch2b halves it.
  shapes = {}
  for placement in ("caffe", "torchvision"):
    spec = SMALL_SPECS[f"resnet_{placement}_small"]
    v = random_variables(spec, 8)
    got = models.consumer_inputs(spec, v, jnp.ones((1, 8, 8, 2)))
    shapes[placement] = (
      got["res3a/branch2b"].shape,
      got["res3a/branch2c"].shape,
    )
  assert shapes["caffe"] == ((1, 4, 4, 5), (1, 4, 4, 5))
  assert shapes["torchvision"] == ((1, 8, 8, 5), (1, 4, 4, 5))


def test_train_mode_updates_batch_stats_and_uses_dropout():
  spec = SMALL_SPECS["vgg_fc_bn"]
  variables = models.init(spec, jax.random.key(0), 8)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
  model = models.build(spec)
  out1, state = model.apply(
    variables, x, train=True, mutable=["batch_stats"],
    rngs={"dropout": jax.random.key(2)},
  )  # fmt: skip
  out2, _ = model.apply(
    variables, x, train=True, mutable=["batch_stats"],
    rngs={"dropout": jax.random.key(3)},
  )  # fmt: skip
  assert not np.allclose(out1, out2), "dropout rng must matter in train mode"
  old = flax.traverse_util.flatten_dict(variables["batch_stats"])
  new = flax.traverse_util.flatten_dict(state["batch_stats"])
  assert old.keys() == new.keys()
  assert any(not np.allclose(old[k], new[k]) for k in old)
  # Eval mode is deterministic and leaves stats alone.
  e1 = model.apply(variables, x)
  e2 = model.apply(variables, x)
  np.testing.assert_array_equal(e1, e2)


def _flat_shapes(tree):
  return {
    "/".join(k): v.shape
    for k, v in flax.traverse_util.flatten_dict(tree).items()
  }


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_runs_and_matches_its_profile(name):
  """Every preset's variables match its profile row by row; the CPU-sized
  ones also run (the ImageNet-sized ones are checked on shapes: running
  VGG-16 at 224x224 would only time the CPU)."""
  spec = presets.get(name)
  size = presets.IMAGE_SIZE[name]
  x = jax.random.normal(jax.random.key(1), (1, size, size, spec.in_channels))
  if size <= 32:
    variables = random_variables(spec, size)
    logits = jax.jit(models.build(spec).apply)(variables, x)
    assert bool(jnp.all(jnp.isfinite(logits)))
  else:
    variables = jax.eval_shape(models.build(spec).init, jax.random.key(0), x)
    logits = jax.eval_shape(models.build(spec).apply, variables, x)
  assert logits.shape == (1, spec.num_classes)

  prof = profile.count(spec, size)
  params = _flat_shapes(variables["params"])
  n_params = sum(int(np.prod(s)) for s in params.values())
  assert prof["params"] == n_params
  n_stats = sum(
    int(np.prod(s))
    for s in _flat_shapes(variables.get("batch_stats", {})).values()
  )
  assert prof["batch_stats"] == n_stats
  # Row by row: every conv / dense row names a real kernel of its shape.
  weight_rows = [r for r in prof["layers"] if r["kind"] != "batch_norm"]
  assert {r["name"] + "/kernel" for r in weight_rows} == {
    k for k in params if k.endswith("/kernel")
  }
  for r in weight_rows:
    assert params[r["name"] + "/kernel"] == tuple(r["kernel"]), r["name"]


def test_jitted_forward_and_capture_do_not_recompile():
  spec = SMALL_SPECS["resnet_caffe_small"]
  variables = random_variables(spec, 8)
  forward = jax.jit(models.build(spec).apply)
  capture = jax.jit(lambda v, x: models.consumer_inputs(spec, v, x))
  for seed in range(3):
    x = jax.random.normal(jax.random.key(seed), (2, 8, 8, 2))
    forward(variables, x)
    capture(variables, x)
  assert forward._cache_size() == 1
  assert capture._cache_size() == 1
