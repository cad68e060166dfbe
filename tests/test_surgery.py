"""Surgery: identity, masked equivalence, profile consistency, bad input."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thinet_jax import groups, models, presets, profile, surgery
from thinet_jax.spec import ModelSpec

import reference
from conftest import SPECS, random_variables

SIZE = 8


def _x(spec, seed=1):
  return jax.random.normal(
    jax.random.key(seed), (2, SIZE, SIZE, spec.in_channels)
  )


def _logits(spec, variables, x):
  return np.asarray(models.build(spec).apply(variables, x))


def _count(variables):
  return sum(int(np.size(v)) for v in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_keep_everything_with_unit_scales_is_the_identity(name):
  spec = SPECS[name]
  variables = random_variables(spec, SIZE)
  x = _x(spec)
  want = _logits(spec, variables, x)
  for group in groups.groups(spec):
    keep = np.arange(group.width)
    new_spec, new_vars = surgery.prune(spec, variables, group, keep)
    assert new_spec == spec
    np.testing.assert_array_equal(_logits(new_spec, new_vars, x), want)


def _masked(variables, group, keep, scales):
  """Same shapes; consumer input channels zeroed or scaled (NumPy)."""
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  path = f"params/{group.consumer}/kernel"
  w = np.array(flat[path])
  factor = np.zeros(group.width, np.float32)
  factor[keep] = scales
  if group.consumer_kind == "conv":
    w = w * factor[None, None, :, None]
  elif group.consumer_kind == "gap_dense":
    w = w * factor[:, None]
  else:
    w = (
      w.reshape(-1, group.width, w.shape[-1]) * factor[None, :, None]
    ).reshape(w.shape)
  flat = dict(flat)
  flat[path] = w
  return flax.traverse_util.unflatten_dict(flat, sep="/")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_pruned_model_equals_masked_model_and_its_profile(name):
  spec = SPECS[name]
  variables = random_variables(spec, SIZE)
  x = _x(spec)
  rng = np.random.default_rng(0)
  for group in groups.groups(spec):
    n = max(1, group.width // 2)
    keep = np.sort(rng.choice(group.width, n, replace=False))
    scales = rng.uniform(0.5, 1.5, n).astype(np.float32)
    new_spec, new_vars = surgery.prune(spec, variables, group, keep, scales)
    assert groups.get(new_spec, group.name).width == n
    # The removed channels only fed the consumer: zeroing their consumer
    # weights in the unpruned model gives the same logits.
    want = _logits(spec, _masked(variables, group, keep, scales), x)
    np.testing.assert_allclose(
      _logits(new_spec, new_vars, x), want, rtol=1e-5, atol=1e-5
    )
    assert profile.count(new_spec, SIZE)["params"] == _count(new_vars)
    # Every other leaf is untouched.
    old = flax.traverse_util.flatten_dict(variables, sep="/")
    new = flax.traverse_util.flatten_dict(new_vars, sep="/")
    assert old.keys() == new.keys()
    for leaf in set(old) - set(group.param_leaves):
      np.testing.assert_array_equal(old[leaf], new[leaf])


def test_groups_follow_the_paper():
  vgg = presets.get("vgg16")
  names = [g.name for g in groups.paper_groups(vgg)]
  assert names == [
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2",
    "conv3_3", "conv4_1", "conv4_2", "conv4_3",
  ]  # fmt: skip
  assert groups.get(vgg, "conv5_3").consumer == "fc6"
  assert groups.get(vgg, "conv5_3").consumer_kind == "flatten_dense"
  assert groups.get(presets.get("thinet-gap"), "conv5_3").consumer_kind == (
    "gap_dense"
  )
  resnet = presets.get("resnet50")
  rg = groups.paper_groups(resnet)
  assert len(rg) == 32 and rg[0].name == "res2a/branch2a"
  assert {g.consumer.split("/")[1] for g in rg} == {"branch2b", "branch2c"}
  assert not any("branch2c" in g.name or "branch1" in g.name for g in rg)
  tv = groups.get(presets.get("resnet50-torchvision"), "res3a/branch2a")
  assert tv.consumer_stride == 2
  assert groups.get(resnet, "res3a/branch2a").consumer_stride == 1


@pytest.mark.parametrize("name", sorted(SPECS))
def test_mean_shift_goes_to_the_consumers_bias_or_batchnorm_mean(name):
  """The shift is added to the consumer's output: y + shift must equal what
  the consumer's BatchNorm (mean - shift) or bias (bias + shift) sees."""
  spec = SPECS[name]
  variables = random_variables(spec, SIZE)
  old = flax.traverse_util.flatten_dict(variables, sep="/")
  for group in groups.groups(spec):
    if group.consumer_bn is None:
      leaf, sign = f"params/{group.consumer}/bias", 1.0
    else:
      leaf, sign = f"batch_stats/{group.consumer_bn}/mean", -1.0
    assert (group.consumer_bn is None) == (not spec.batch_norm) or (
      group.consumer_kind != "conv"
    )
    shift = np.arange(old[leaf].shape[0], dtype=np.float32) + 1.0
    keep = np.arange(group.width)
    _, new_vars = surgery.prune(spec, variables, group, keep, shift=shift)
    new = flax.traverse_util.flatten_dict(new_vars, sep="/")
    np.testing.assert_allclose(new[leaf], old[leaf] + sign * shift)
    for other in set(old) - {leaf}:
      np.testing.assert_array_equal(old[other], new[other])


def test_bad_input_is_a_clear_error():
  spec = SPECS["vgg_bn_fc"]
  variables = random_variables(spec, SIZE)
  group = groups.get(spec, "conv2_1")  # 6 channels
  for keep, message in (
    ([], "at least one"),
    ([0, 0, 1], "sorted and unique"),
    ([2, 1], "sorted and unique"),
    ([0, 6], r"\[0, 6\)"),
    ([0.0, 1.0], "integer"),
  ):
    with pytest.raises(ValueError, match=message):
      surgery.prune(spec, variables, group, np.array(keep))
  with pytest.raises(ValueError, match="scales must have shape"):
    surgery.prune(spec, variables, group, np.array([0, 1]), np.ones(3))
  with pytest.raises(ValueError, match=r"shift must have shape \(5,\)"):
    surgery.prune(spec, variables, group, np.array([0, 1]), shift=np.ones(6))
  with pytest.raises(KeyError, match="no prunable group 'conv9_9'"):
    groups.get(spec, "conv9_9")
  smaller, small_vars = surgery.prune(spec, variables, group, np.array([0, 1]))
  with pytest.raises(ValueError, match="call groups.get again"):
    surgery.prune(smaller, small_vars, group, np.array([0]))
  other = random_variables(SPECS["vgg_plain_fc"], SIZE)
  with pytest.raises(KeyError, match="belong to this spec"):
    surgery.prune(spec, other, groups.get(spec, "conv1_1"), np.array([0]))


def test_prune_is_traceable_and_does_not_modify_inputs():
  spec = SPECS["resnet_caffe"]
  variables = random_variables(spec, SIZE)
  before = jax.tree.map(np.array, variables)
  group = groups.get(spec, "res2a/branch2b")
  out = jax.jit(
    lambda v, s: surgery.prune(spec, v, group, np.array([0, 2]), s)[1]
  )(variables, jnp.array([1.5, 0.5]))
  assert out["params"]["res2a"]["branch2c"]["kernel"].shape == (1, 1, 2, 8)
  jax.tree.map(np.testing.assert_array_equal, variables, before)


def _images(spec, n, size, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, size, size, spec.in_channels)).astype(np.float32)
  return [{"image": x[i : i + 16]} for i in range(0, n, 16)]


def test_gap_head_recovers_a_planted_linear_head():
  """A 1x1 map flattened is its own average: the fc head *is* linear in
  the pooled features, so the fit must find fc6 itself (on the channels
  that are not dead on every image), and the same logits."""
  spec = ModelSpec(
    family="vgg", layers=(4, "M", 6, "M", 5), head="fc",
    batch_norm=True, num_classes=3, in_channels=2,
  )  # fmt: skip  # 4x4 images: conv3's map is 1x1, no final pool.
  variables = random_variables(spec, 4)
  batches = _images(spec, 64, 4, seed=3)
  gap, new_vars, info = surgery.gap_head(spec, variables, batches, ridge=0.0)
  assert gap.head == "gap" and gap.layers == spec.layers
  assert info["images"] == 64 and info["relative_error"] < 1e-8
  x = np.concatenate([b["image"] for b in batches])
  f = models.consumer_inputs(gap, new_vars, x, ["fc"])["fc"]  # [B, C]
  live = np.asarray(f).max(0) > 0
  assert live.sum() >= 2
  np.testing.assert_allclose(
    new_vars["params"]["fc"]["kernel"][live],
    variables["params"]["fc6"]["kernel"][live], rtol=1e-4, atol=1e-5,
  )  # fmt: skip
  np.testing.assert_allclose(
    _logits(gap, new_vars, x), _logits(spec, variables, x), rtol=1e-4,
    atol=1e-4,
  )  # fmt: skip


def test_gap_head_is_the_least_squares_fit_to_the_old_logits():
  """Against NumPy's lstsq on the last conv's output averaged over
  positions (captured before pool5 by another path), for a head with a
  hidden layer and ReLU that no linear head reproduces exactly."""
  spec = SPECS["vgg_bn_fc"]
  variables = random_variables(spec, SIZE, seed=4)
  batches = _images(spec, 48, SIZE, seed=5)
  gap, new_vars, info = surgery.gap_head(spec, variables, batches, ridge=0.0)
  x = np.concatenate([b["image"] for b in batches])
  last = spec.vgg_conv_names()[-1]
  f = reference.vgg(spec, variables, x)[2][last]  # NumPy forward
  a = np.concatenate([f.mean((1, 2)), np.ones((len(x), 1))], 1)
  z = _logits(spec, variables, x)
  solution, *_ = np.linalg.lstsq(a.astype(np.float64), z, rcond=None)
  np.testing.assert_allclose(
    new_vars["params"]["fc"]["kernel"], solution[:-1], rtol=1e-3, atol=1e-4
  )
  np.testing.assert_allclose(
    new_vars["params"]["fc"]["bias"], solution[-1], rtol=1e-3, atol=1e-4
  )
  residual = ((a @ solution - z) ** 2).sum() / (z**2).sum()
  assert info["relative_error"] == pytest.approx(residual, rel=1e-3, abs=1e-7)
  assert 1e-4 < info["relative_error"] < 1  # Not exact, better than zero.
  assert "fc6" not in new_vars["params"] and "fc7" not in new_vars["params"]
  # The other leaves are the old model's, untouched.
  np.testing.assert_array_equal(
    new_vars["params"]["conv2_1"]["kernel"],
    variables["params"]["conv2_1"]["kernel"],
  )


def test_gap_head_rejects_what_it_cannot_replace():
  with pytest.raises(ValueError, match="head"):
    surgery.gap_head(SPECS["vgg_bn_gap"], {}, [])
  with pytest.raises(ValueError, match="family"):
    surgery.gap_head(presets.get("resnet-fmnist"), {}, [])
  spec = SPECS["vgg_bn_fc"]
  with pytest.raises(ValueError, match="at least one batch"):
    surgery.gap_head(spec, random_variables(spec, SIZE), [])
