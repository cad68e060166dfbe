"""One composed pruning step, on planted ground truths."""

import dataclasses
import json

import flax
import jax
import numpy as np
import pytest

from thinet_jax import (
  depgraph,
  factories,
  groups,
  models,
  pipeline,
  profile,
  select,
  train,
)
from thinet_jax.spec import ModelSpec

import reference
from conftest import SPECS, random_variables

SPEC = ModelSpec(
  family="vgg", layers=(6, "M", 5, 4), head="gap", num_classes=3,
  in_channels=2,
)  # fmt: skip
SIZE = 8


def _batches(n=2, seed=0):
  rng = np.random.default_rng(seed)
  return [
    {"image": rng.normal(size=(4, SIZE, SIZE, 2)).astype(np.float32)}
    for _ in range(n)
  ]


def _logits(spec, variables, images):
  return np.asarray(models.build(spec).apply(variables, images))


def _prune(variables, criterion, least_squares=True, keep_ratio=0.84):
  return pipeline.prune_group(
    SPEC, variables, "conv1_1", _batches(), keep_ratio=keep_ratio,
    image_size=SIZE, criterion=criterion, least_squares=least_squares,
    mode="exhaustive", key=jax.random.key(0), progress=False,
  )  # fmt: skip


def test_dead_channel_goes_first_and_changes_nothing():
  """(a) A channel whose consumer weights are zero contributes nothing."""
  variables = random_variables(SPEC, SIZE)
  params = variables["params"]
  params["conv2_1"]["kernel"][:, :, 2, :] = 0.0
  params["conv1_1"]["kernel"][..., 2] *= 10.0  # the largest filter norm
  params["conv1_1"]["bias"][2] = 1.0
  l1 = np.abs(params["conv1_1"]["kernel"]).sum(axis=(0, 1, 2))
  assert l1.argmax() == 2
  images = _batches(1, seed=5)[0]["image"]
  before = _logits(SPEC, variables, images)

  spec2, vars2, record = _prune(variables, "thinet")
  assert record.width_after == 5 and 2 not in record.kept
  np.testing.assert_allclose(record.scales, np.ones(5), rtol=1e-4)
  assert record.relative_error < 1e-6
  np.testing.assert_allclose(
    _logits(spec2, vars2, images), before, rtol=1e-5, atol=1e-5
  )
  # The magnitude criterion keeps it: it has the largest norm.
  _, _, by_norm = _prune(variables, "weight_sum")
  assert 2 in by_norm.kept


def test_weight_sum_original_scores_the_unpruned_filters():
  """After conv1_1 is cut and its consumer conv2_1 rescaled, `weight_sum`
  ranks conv2_1's filters as they are now and `weight_sum_original` as they
  were (Li et al.'s and Torch-Pruning's scores): each keeps the largest L1
  norms of its own kernel (NumPy)."""
  original = random_variables(SPEC, SIZE)
  spec1, vars1, _ = _prune(original, "thinet", keep_ratio=0.5)

  def l1_top(kernel, n):
    norms = np.abs(np.asarray(kernel, np.float64)).sum(axis=(0, 1, 2))
    return sorted(np.argsort(-norms, kind="stable")[:n].tolist())

  def second(criterion, **kw):
    return pipeline.prune_group(
      spec1, vars1, "conv2_1", _batches(), keep_ratio=0.6, image_size=SIZE,
      criterion=criterion, mode="exhaustive", progress=False, **kw,
    )[2].kept  # fmt: skip

  now = vars1["params"]["conv2_1"]["kernel"]
  was = original["params"]["conv2_1"]["kernel"]
  assert now.shape[2] == 3 and was.shape[2] == 6
  assert second("weight_sum") == l1_top(now, 3)
  kept = second("weight_sum_original", reference=(SPEC, original))
  assert kept == l1_top(was, 3)
  with pytest.raises(ValueError, match="reference="):
    second("weight_sum_original")


def test_proportional_channel_is_folded_into_its_twin():
  """(b) Channel 4 = 0.5 * channel 1 (filter and bias), consumer weights
  0.2x: its contribution is 0.1x channel 1's, so least squares moves it onto
  channel 1 (scale 1.1) and the logits do not change."""
  variables = random_variables(SPEC, SIZE)
  params = variables["params"]
  p, c = params["conv1_1"], params["conv2_1"]
  p["kernel"][..., 4] = 0.5 * p["kernel"][..., 1]
  p["bias"][1] = abs(p["bias"][1]) + 0.5  # keep it alive through ReLU
  p["bias"][4] = 0.5 * p["bias"][1]
  c["kernel"][:, :, 4, :] = 0.2 * c["kernel"][:, :, 1, :]
  images = _batches(1, seed=5)[0]["image"]
  before = _logits(SPEC, variables, images)

  traced = factories.graph_of(SPEC, SIZE)
  (st,) = depgraph.collect(
    traced, variables, traced.group("conv1_1"), _batches(), mode="exhaustive"
  ).values()  # fmt: skip
  gram = st.gram
  diag = np.diag(gram)
  assert diag.argmin() == 4, "precondition: channel 4 is the smallest"
  assert int(select.greedy_order(gram.astype(np.float32))[0]) == 4

  spec2, vars2, record = _prune(variables, "thinet")
  assert 4 not in record.kept
  np.testing.assert_allclose(record.scales, [1, 1.1, 1, 1, 1], rtol=1e-3)
  assert record.relative_error < 1e-6 < record.relative_error_unscaled
  np.testing.assert_allclose(
    _logits(spec2, vars2, images), before, rtol=1e-4, atol=1e-4
  )
  # Without least squares the same removal does change the logits.
  spec3, vars3, plain = _prune(variables, "thinet", least_squares=False)
  assert plain.kept == record.kept and plain.scales == [1.0] * 5
  assert not np.allclose(_logits(spec3, vars3, images), before, atol=1e-4)


@pytest.mark.parametrize("criterion", sorted(select.CRITERIA))
def test_record_is_consistent_and_json_ready(criterion):
  variables = random_variables(SPEC, SIZE)
  spec2, vars2, record = pipeline.prune_group(
    SPEC, variables, "conv2_1", _batches(), keep_ratio=0.5, image_size=SIZE,
    criterion=criterion, key=jax.random.key(1), progress=False,
    reference=(SPEC, variables),  # weight_sum_original scores it.
  )  # fmt: skip
  assert groups.get(spec2, "conv2_1").width == record.width_after == 2
  assert record.width_before == 5 and len(record.kept) == 2
  assert record.samples == 8 * 10  # 8 images x 10 samples (paper default)
  after = profile.count(spec2, SIZE)
  assert record.params_after == after["params"]
  assert record.flops_after == after["flops"] < record.flops_before
  params = sum(np.size(v) for v in jax.tree.leaves(vars2["params"]))
  assert params == record.params_after
  assert 0.0 <= record.relative_error <= 1.0 + 1e-6
  json.dumps(dataclasses.asdict(record))


def test_bad_step_arguments():
  variables = random_variables(SPEC, SIZE)
  with pytest.raises(KeyError, match="unknown criterion 'l1'"):
    _prune(variables, "l1")
  with pytest.raises(ValueError, match="keep_ratio must be in"):
    _prune(variables, "thinet", keep_ratio=1.5)
  with pytest.raises(KeyError, match="no prunable group"):
    pipeline.prune_group(
      SPEC, variables, "fc", _batches(), keep_ratio=0.5, image_size=SIZE
    )


def _constant_channel_case(name):
  """A model whose group `name` has one channel, c = 0, that is constant
  0.7 after its ReLU (zero filter; bias or BatchNorm shift 0.7): its
  contribution to a 1x1 or global-pooled consumer is a constant per output
  channel, which only a mean shift can restore. weight_sum removes it first
  (zero filter), so selection is not under test here."""
  if name == "conv2_2":
    spec = SPEC  # consumer: global pool + fc (a bias)
  else:
    spec = SPECS["resnet_caffe"]  # consumer: 1x1 branch2c + BatchNorm
  variables = random_variables(spec, SIZE)
  group = groups.get(spec, name)
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  params[f"{group.producer}/kernel"][..., 0] = 0.0  # NumPy leaves, in place
  if group.producer_bn is None:
    params[f"{group.producer}/bias"][0] = 0.7
  else:
    params[f"{group.producer_bn}/scale"][0] = 0.0
    params[f"{group.producer_bn}/bias"][0] = 0.7
  return spec, variables, group


@pytest.mark.parametrize("name", ["conv2_2", "res2a/branch2b"])
def test_centred_reconstruction_restores_a_constant_channel(name):
  spec, variables, group = _constant_channel_case(name)
  rng = np.random.default_rng(9)
  batches = [
    {"image": rng.normal(size=(4, SIZE, SIZE, 2)).astype(np.float32)}
    for _ in range(2)
  ]
  images = batches[0]["image"]
  before = _logits(spec, variables, images)
  n_keep = group.width - 1

  def prune(centred):
    return pipeline.prune_group(
      spec, variables, name, batches, keep_ratio=1.0, n_keep=n_keep,
      image_size=SIZE, criterion="weight_sum", mode="exhaustive",
      key=jax.random.key(0), progress=False, centred=centred,
    )  # fmt: skip

  spec2, vars2, record = prune(centred=True)
  assert 0 not in record.kept and record.centred
  np.testing.assert_allclose(record.scales, np.ones(n_keep), rtol=1e-4)
  assert record.relative_error < 1e-6 and record.relative_error_centred < 1e-6
  np.testing.assert_allclose(
    _logits(spec2, vars2, images), before, rtol=1e-4, atol=1e-4
  )
  # The paper's uncentred fit cannot express a constant: the logits move.
  spec3, vars3, plain = prune(centred=False)
  assert plain.kept == record.kept and plain.relative_error > 1e-3
  assert not np.allclose(_logits(spec3, vars3, images), before, atol=1e-3)


def test_batch_norm_reestimation_after_surgery():
  spec = SPECS["vgg_bn_fc"]
  variables = random_variables(spec, SIZE)
  batches = _batches(3)

  def prune(bn_batches, data=batches):
    return pipeline.prune_group(
      spec, variables, "conv1_1", data, keep_ratio=0.5, image_size=SIZE,
      key=jax.random.key(0), progress=False, bn_batches=bn_batches,
    )  # fmt: skip

  spec2, plain, record = prune(0)
  assert record.bn_batches == 0
  _, fresh, record = prune(2)
  assert record.bn_batches == 2
  want = train.reestimate_batch_norm(spec2, plain, batches, 2)
  jax.tree.map(np.testing.assert_allclose, fresh, want)
  assert not np.allclose(
    fresh["batch_stats"]["bn2_1"]["mean"], plain["batch_stats"]["bn2_1"]["mean"]
  )
  with pytest.raises(ValueError, match="not an iterator"):
    prune(1, iter(batches))


def test_original_target_fits_the_unpruned_models_output():
  """After conv1_1 is pruned without least squares (an error in conv2_1's
  output, hence in conv2_2's input), pruning conv2_1 with every channel kept
  and target="original" rescales them by the least squares of the
  *unpruned* model's conv2_2 output on the current contributions; the
  paper's target keeps scales 1 and reports no error."""
  original = random_variables(SPEC, SIZE)
  spec1, vars1, _ = pipeline.prune_group(
    SPEC, original, "conv1_1", _batches(), keep_ratio=0.5, image_size=SIZE,
    least_squares=False, mode="exhaustive", progress=False,
  )  # fmt: skip

  def prune(target):
    return pipeline.prune_group(
      spec1, vars1, "conv2_1", _batches(), keep_ratio=1.0, image_size=SIZE,
      criterion="weight_sum", mode="exhaustive", progress=False,
      target=target, reference=(SPEC, original),
    )  # fmt: skip

  _, _, record = prune("original")
  rows, target = [], []
  kernel = np.asarray(original["params"]["conv2_2"]["kernel"], np.float64)
  for batch in _batches():
    x = models.consumer_inputs(spec1, vars1, batch["image"], ["conv2_2"])
    x0 = models.consumer_inputs(SPEC, original, batch["image"], ["conv2_2"])
    pads = ((1, 1), (1, 1))
    rows.append(
      reference.conv_rows(np.asarray(x["conv2_2"], np.float64), kernel, 1, pads)
    )
    target.append(
      reference.conv_rows(
        np.asarray(x0["conv2_2"], np.float64), kernel, 1, pads
      ).sum(1)
    )
  rows, target = np.concatenate(rows), np.concatenate(target)
  scales = np.linalg.lstsq(rows, target, rcond=None)[0]
  residual = np.sum((target - rows @ scales) ** 2)
  assert record.target == "original" and record.kept == list(range(5))
  np.testing.assert_allclose(record.scales, scales, rtol=2e-3, atol=2e-3)
  np.testing.assert_allclose(
    record.relative_error, residual / np.sum(target**2), rtol=2e-2
  )
  assert record.relative_error > 1e-3  # conv1_1's error, partly undone
  _, _, own = prune("current")
  own_output = rows.sum(axis=1)  # Dead channels may get any scale.
  np.testing.assert_allclose(
    rows @ np.array(own.scales), own_output, rtol=1e-4, atol=1e-4
  )
  assert own.relative_error < 1e-6
  with pytest.raises(ValueError, match="needs reference"):
    pipeline.prune_group(
      spec1, vars1, "conv2_1", _batches(), keep_ratio=0.5, image_size=SIZE,
      target="original",
    )  # fmt: skip
  with pytest.raises(ValueError, match="target must be one of"):
    prune("teacher")


def test_kernel_refit_is_numpys_least_squares_on_the_patches():
  """refit="kernel" (He et al.): after conv1_1 is cut without least
  squares and conv2_1 to 3 of 5 channels, conv2_2's whole kernel is
  NumPy's least squares of its new input's 3x3 patches against the
  unpruned model's conv2_2 output; the record lists it as refitted, with
  that fit's relative error."""
  original = random_variables(SPEC, SIZE)
  spec1, vars1, _ = pipeline.prune_group(
    SPEC, original, "conv1_1", _batches(), keep_ratio=0.5, image_size=SIZE,
    least_squares=False, mode="exhaustive", progress=False,
  )  # fmt: skip
  spec2, vars2, record = pipeline.prune_group(
    spec1, vars1, "conv2_1", _batches(), keep_ratio=0.6, image_size=SIZE,
    mode="exhaustive", progress=False, target="original",
    reference=(SPEC, original), refit="kernel",
  )  # fmt: skip
  kernel0 = np.asarray(original["params"]["conv2_2"]["kernel"], np.float64)
  rows, target = [], []
  for batch in _batches():
    x = models.consumer_inputs(spec2, vars2, batch["image"], ["conv2_2"])
    x0 = models.consumer_inputs(SPEC, original, batch["image"], ["conv2_2"])
    x = np.asarray(x["conv2_2"], np.float64)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    b, hp, wp, c = x.shape
    patches = np.stack(
      [
        x[:, u : hp - 2 + u, v : wp - 2 + v] for u in range(3) for v in range(3)
      ],
      axis=3,
    )  # [B, H, W, 9, C]: (u, v) major, as HWIO
    rows.append(patches.reshape(-1, 9 * c))
    out = reference.conv(np.asarray(x0["conv2_2"], np.float64), kernel0)
    target.append(out.reshape(-1, out.shape[-1]))
  rows, target = np.concatenate(rows), np.concatenate(target)
  solution = np.linalg.lstsq(rows, target, rcond=None)[0]
  got = np.asarray(vars2["params"]["conv2_2"]["kernel"], np.float64)
  assert got.shape == (3, 3, 3, kernel0.shape[-1])
  np.testing.assert_allclose(
    got.reshape(solution.shape), solution, rtol=1e-3, atol=1e-3
  )
  residual = np.sum((target - rows @ solution) ** 2) / np.sum(target**2)
  assert record.refit == "kernel" and record.scales == []
  assert record.relative_error == pytest.approx(residual, rel=1e-2, abs=1e-5)
