"""Gram statistics against brute-force NumPy loops over explicit samples."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thinet_jax import depgraph, factories, groups, models, stats
from thinet_jax.depgraph import program as program_lib
from thinet_jax.spec import ModelSpec
from thinet_jax.stats import MODES

import reference
from conftest import random_variables


def _same_pads(size, k, s):
  out = math.ceil(size / s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _data(shape_x, shape_k, seed=0):
  rng = np.random.default_rng(seed)
  x = np.maximum(rng.normal(size=shape_x), 0.0)  # post-ReLU-like
  return x.astype(np.float32), rng.normal(size=shape_k).astype(np.float32)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID", "torch"])
def test_exhaustive_conv_gram_equals_brute_force(k, stride, padding):
  x, kernel = _data((2, 7, 6, 4), (k, k, 4, 3))
  if padding == "SAME":
    pads = (_same_pads(7, k, stride), _same_pads(6, k, stride))
    arg = "SAME"
  elif padding == "VALID":
    pads, arg = ((0, 0), (0, 0)), "VALID"
  else:  # Symmetric k // 2, as our models pad.
    pads, arg = ((k // 2, k // 2), (k // 2, k // 2)), k // 2
  rows = reference.conv_rows(
    x.astype(np.float64), kernel.astype(np.float64), stride, pads
  )
  gram, count = stats.conv_gram(x, kernel, (stride, stride), arg, "exhaustive")
  assert count == len(rows)
  np.testing.assert_allclose(gram, rows.T @ rows, rtol=2e-5, atol=1e-4)


def test_sampled_conv_gram_uses_the_drawn_samples():
  x, kernel = _data((3, 6, 6, 5), (3, 3, 5, 4), seed=1)
  key = jax.random.key(7)
  gram, count = stats.conv_gram(
    x, kernel, (2, 2), 1, "sampled", key=key, samples_per_image=6
  )
  assert count == 18
  # Replay the draws, then build each sampled row by brute force.
  kpos, kout = jax.random.split(key)
  pos = np.asarray(jax.random.randint(kpos, (3, 6), 0, 9))  # Ho * Wo = 3 * 3
  out = np.asarray(jax.random.randint(kout, (3, 6), 0, 4))
  all_rows = reference.conv_rows(
    x.astype(np.float64), kernel.astype(np.float64), 2, ((1, 1), (1, 1))
  ).reshape(3, 9, 4, 5)
  rows = np.array(
    [all_rows[b, pos[b, s], out[b, s]] for b in range(3) for s in range(6)]
  )
  np.testing.assert_allclose(gram, rows.T @ rows, rtol=2e-5, atol=1e-4)


def test_sampled_gram_is_unbiased():
  """E[G_sampled] = S / (Ho Wo D) * G_exhaustive, per image."""
  x, kernel = _data((2, 5, 5, 3), (3, 3, 3, 4), seed=2)
  s, draws = 4, 4000
  exhaustive, _ = stats.conv_gram(x, kernel, (1, 1), 1, "exhaustive")
  keys = jax.random.split(jax.random.key(0), draws)
  sampled = jax.vmap(
    lambda key: stats.conv_gram(
      x, kernel, (1, 1), 1, "sampled", key=key, samples_per_image=s
    )[0]
  )(keys)
  sampled = np.asarray(sampled, np.float64)
  expected = np.asarray(exhaustive) * s / (5 * 5 * 4)
  # The mean of `draws` independent draws has standard error std / sqrt(n);
  # 5 standard errors bound every entry with overwhelming probability.
  stderr = sampled.std(axis=0) / np.sqrt(draws)
  assert np.all(np.abs(sampled.mean(axis=0) - expected) <= 5 * stderr + 1e-6)


def brute_dense_rows(x, kernel, pooling):
  """Every (image, output unit) sample's contribution row, image-major."""
  rows = []
  for b in range(x.shape[0]):
    for d in range(kernel.shape[1]):
      if pooling == "flatten":
        w = kernel[:, d].reshape(x.shape[1:])  # NHWC flatten order
        rows.append(np.einsum("hwc,hwc->c", x[b], w))
      else:
        rows.append(x[b].mean(axis=(0, 1)) * kernel[:, d])
  return np.array(rows, np.float64)


@pytest.mark.parametrize("pooling", ["flatten", "gap"])
def test_dense_gram_equals_brute_force(pooling):
  rng = np.random.default_rng(3)
  x = np.maximum(rng.normal(size=(3, 2, 3, 4)), 0).astype(np.float32)
  rows_in = 2 * 3 * 4 if pooling == "flatten" else 4
  kernel = rng.normal(size=(rows_in, 5)).astype(np.float32)
  rows = brute_dense_rows(x, kernel, pooling)
  gram, count = stats.dense_gram(x, kernel, pooling, "exhaustive")
  assert count == 15
  np.testing.assert_allclose(gram, rows.T @ rows, rtol=2e-5, atol=1e-5)
  # Sampled: the rows of the drawn (image, unit) pairs.
  key = jax.random.key(1)
  gram_s, count_s = stats.dense_gram(
    x, kernel, pooling, "sampled", key=key, samples_per_image=2
  )
  units = np.asarray(jax.random.randint(key, (3, 2), 0, 5))
  picked = np.array(
    [rows[b * 5 + units[b, s]] for b in range(3) for s in range(2)]
  )
  assert count_s == 6
  np.testing.assert_allclose(gram_s, picked.T @ picked, rtol=2e-5, atol=1e-5)


def _sums(rows, out_index, d):
  """Per-output-channel sums of explicit rows: ([C, D], [D])."""
  sums = np.stack([rows[out_index == o].sum(axis=0) for o in range(d)], 1)
  return sums, np.bincount(out_index, minlength=d)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, "VALID")])
def test_conv_sums_equal_brute_force(stride, padding):
  x, kernel = _data((2, 6, 5, 4), (3, 3, 4, 3), seed=4)
  pads = ((1, 1), (1, 1)) if padding == 1 else ((0, 0), (0, 0))
  rows = reference.conv_rows(
    x.astype(np.float64), kernel.astype(np.float64), stride, pads
  )
  out_index = np.arange(len(rows)) % 3  # rows run (b, i, j, d), d fastest
  gram, count, sums, counts = stats.conv_gram(
    x, kernel, (stride, stride), padding, "exhaustive", sums=True
  )
  want, want_counts = _sums(rows, out_index, 3)
  np.testing.assert_allclose(sums, want, rtol=2e-5, atol=1e-4)
  np.testing.assert_allclose(counts, want_counts)
  # Sampled: the sums of the drawn rows, binned by their drawn channel.
  key = jax.random.key(3)
  _, _, sums_s, counts_s = stats.conv_gram(
    x, kernel, (stride, stride), padding, "sampled", key=key,
    samples_per_image=7, sums=True,
  )  # fmt: skip
  per_image = len(rows) // 2
  kpos, kout = jax.random.split(key)
  pos = np.asarray(jax.random.randint(kpos, (2, 7), 0, per_image // 3))
  out = np.asarray(jax.random.randint(kout, (2, 7), 0, 3))
  picked = np.array(
    [rows[b * per_image + pos[b, s] * 3 + out[b, s]]
     for b in range(2) for s in range(7)]
  )  # fmt: skip
  want, want_counts = _sums(picked, out.reshape(-1), 3)
  np.testing.assert_allclose(sums_s, want, rtol=2e-5, atol=1e-4)
  np.testing.assert_allclose(counts_s, want_counts)


@pytest.mark.parametrize("pooling", ["flatten", "gap"])
def test_dense_sums_equal_brute_force(pooling):
  rng = np.random.default_rng(5)
  x = np.maximum(rng.normal(size=(3, 2, 2, 4)), 0).astype(np.float32)
  rows_in = 2 * 2 * 4 if pooling == "flatten" else 4
  kernel = rng.normal(size=(rows_in, 5)).astype(np.float32)
  rows = brute_dense_rows(x, kernel, pooling)
  mask = jnp.array([1.0, 0.0, 1.0])  # image 1 contributes nothing
  _, _, sums, counts = stats.dense_gram(
    x, kernel, pooling, "exhaustive", mask=mask, sums=True
  )
  keep = np.repeat([True, False, True], 5)
  want, want_counts = _sums(rows[keep], np.arange(15)[keep] % 5, 5)
  np.testing.assert_allclose(sums, want, rtol=2e-5, atol=1e-5)
  np.testing.assert_allclose(counts, want_counts)
  key = jax.random.key(2)
  _, _, sums_s, counts_s = stats.dense_gram(
    x, kernel, pooling, "sampled", key=key, samples_per_image=4, sums=True
  )
  units = np.asarray(jax.random.randint(key, (3, 4), 0, 5))
  picked = np.array(
    [rows[b * 5 + units[b, s]] for b in range(3) for s in range(4)]
  )
  want, want_counts = _sums(picked, units.reshape(-1), 5)
  np.testing.assert_allclose(sums_s, want, rtol=2e-5, atol=1e-5)
  np.testing.assert_allclose(counts_s, want_counts)


def _bordered(rows, target, out_index, d):
  """Gram and sums of explicit rows with the target as one more column."""
  aug = np.concatenate([rows, target[:, None]], axis=1)
  return aug.T @ aug, _sums(aug, out_index, d)[0]


@pytest.mark.parametrize(
  "kind,mode",
  [(k, m) for k in ("conv", "flatten", "gap") for m in MODES],
)
def test_a_target_is_one_more_column_of_the_gram_and_sums(kind, mode):
  """`target` borders G and S with the target's row: sum xhat t, sum t^2
  and its per-output-channel sums, on the same (drawn) samples."""
  rng = np.random.default_rng(7)
  x = np.maximum(rng.normal(size=(3, 5, 4, 4)), 0).astype(np.float32)
  key, spi, d = jax.random.key(4), 6, 3
  if kind == "conv":
    kernel = rng.normal(size=(3, 3, 4, d)).astype(np.float32)
    target = rng.normal(size=(3, 3, 2, d)).astype(np.float32)  # stride 2
    rows = reference.conv_rows(x, kernel, 2, ((1, 1), (1, 1)))
    fn = functools.partial(stats.conv_gram, x, kernel, (2, 2), 1, mode)
  else:
    rows_in = 5 * 4 * 4 if kind == "flatten" else 4
    kernel = rng.normal(size=(rows_in, d)).astype(np.float32)
    target = rng.normal(size=(3, d)).astype(np.float32)
    rows = brute_dense_rows(x, kernel, kind)
    fn = functools.partial(stats.dense_gram, x, kernel, kind, mode)
  t = target.reshape(-1).astype(np.float64)  # (b, positions, d), d fastest
  gram, _, sums, _ = fn(
    key=key, samples_per_image=spi, sums=True, target=target
  )
  if mode == "sampled":  # The rows and targets of the drawn samples.
    per_image = len(rows) // 3
    if kind == "conv":
      kpos, kout = jax.random.split(key)
      pos = np.asarray(jax.random.randint(kpos, (3, spi), 0, per_image // d))
      out = np.asarray(jax.random.randint(kout, (3, spi), 0, d))
      index = np.arange(3)[:, None] * per_image + pos * d + out
    else:
      out = np.asarray(jax.random.randint(key, (3, spi), 0, d))
      index = np.arange(3)[:, None] * d + out
    rows, t, out_index = rows[index.ravel()], t[index.ravel()], out.ravel()
  else:
    out_index = np.arange(len(rows)) % d
  want_gram, want_sums = _bordered(rows, t, out_index, d)
  np.testing.assert_allclose(gram, want_gram, rtol=2e-5, atol=2e-4)
  np.testing.assert_allclose(sums, want_sums, rtol=2e-5, atol=2e-4)
  with pytest.raises(ValueError, match="consumer's output"):
    fn(key=key, target=target[:1])


def test_centred_gram_is_the_scatter_within_each_output_channel():
  rng = np.random.default_rng(6)
  rows = rng.normal(size=(60, 4)) + rng.uniform(0, 3, 4)
  out_index = rng.integers(0, 3, 60)
  sums, counts = _sums(rows, out_index, 4)  # output channel 3: no samples
  centred = rows - sums.T[out_index] / counts[out_index, None]
  got = stats.centred_gram(rows.T @ rows, sums, counts)
  np.testing.assert_allclose(got, centred.T @ centred, rtol=1e-10, atol=1e-10)


def test_mask_drops_images():
  x, kernel = _data((3, 5, 5, 3), (3, 3, 3, 2))
  mask = jnp.array([1.0, 0.0, 1.0])
  gram, count = stats.conv_gram(x, kernel, padding=1, mask=mask)
  want, want_count = stats.conv_gram(x[[0, 2]], kernel, padding=1)
  np.testing.assert_allclose(gram, want, rtol=1e-5)
  assert float(count) == want_count


def test_bad_arguments():
  x, kernel = _data((1, 4, 4, 3), (3, 3, 2, 2))
  with pytest.raises(ValueError, match="input channels"):
    stats.conv_gram(x, kernel)
  x, kernel = _data((1, 4, 4, 3), (3, 3, 3, 2))
  with pytest.raises(ValueError, match="mode must be"):
    stats.conv_gram(x, kernel, mode="full")
  with pytest.raises(ValueError, match="PRNG key"):
    stats.conv_gram(x, kernel, mode="sampled")
  with pytest.raises(ValueError, match="padding"):
    stats.conv_gram(x, kernel, padding="FULL")


SPEC = ModelSpec(
  family="vgg", layers=(4, "M", 5, 3), head="fc", fc_widths=(6,),
  batch_norm=True, num_classes=3, in_channels=2,
)  # fmt: skip


def _batches(n, seed=0):
  rng = np.random.default_rng(seed)
  return [
    {"image": rng.normal(size=(3, 8, 8, 2)).astype(np.float32)}
    for _ in range(n)
  ]


def _traced():
  return factories.graph_of(SPEC, 8)


@pytest.mark.parametrize("name", ["conv1_1", "conv2_2"])
def test_collect_streams_exact_statistics(name):
  """Exhaustive statistics of the traced preset over 3 batches
  (`depgraph.collect`) against a NumPy forward pass and explicit rows;
  with a reference model, its consumer output on the same images is the
  target (cross moments, norm, per-output sums). conv1_1's consumer reads
  it after a pool, conv2_2's is the flattening fc6."""
  variables = random_variables(SPEC, 8)
  other = random_variables(SPEC, 8, seed=1)  # The reference model.
  group = groups.get(SPEC, name)
  batches = _batches(3)
  traced = _traced()
  (got,) = depgraph.collect(
    traced, variables, traced.group(name), batches, mode="exhaustive",
    reference=(traced, other),
  ).values()  # fmt: skip

  def contribution_rows(variables, image):
    _, inputs, _ = reference.vgg(SPEC, variables, image)
    x = inputs[group.consumer]
    if group.consumer_kind == "conv":
      kernel = np.asarray(
        variables["params"][group.consumer]["kernel"], np.float64
      )
      rows = reference.conv_rows(x, kernel, 1, ((1, 1), (1, 1)))
    else:
      kernel = np.asarray(variables["params"]["fc6"]["kernel"], np.float64)
      rows = np.einsum("bhwc,hwcd->bdc", x, kernel.reshape(*x.shape[1:], -1))
      rows = rows.reshape(-1, group.width)
    return rows, x

  width = group.width
  gram, sums = np.zeros((width + 1, width + 1)), 0.0
  zeros, positions, count = np.zeros(width), 0, 0
  for batch in batches:
    rows, x = contribution_rows(variables, batch["image"])
    target = contribution_rows(other, batch["image"])[0].sum(axis=1)
    d = variables["params"][group.consumer]["kernel"].shape[-1]
    g, s = _bordered(rows, target, np.arange(len(rows)) % d, d)
    gram, sums = gram + g, sums + s
    count += len(rows)
    zeros += (x == 0).sum(axis=(0, 1, 2))  # zeros of the consumer's input
    positions += x.shape[0] * x.shape[1] * x.shape[2]
  assert got.count == count and got.images == 9
  np.testing.assert_allclose(
    got.gram, gram[:width, :width], rtol=1e-4, atol=1e-4
  )
  np.testing.assert_allclose(
    got.cross, gram[:width, width], rtol=1e-4, atol=1e-4
  )
  np.testing.assert_allclose(got.target_norm, gram[width, width], rtol=1e-4)
  np.testing.assert_allclose(got.target_sums, sums[width], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got.zero_fraction, zeros / positions, atol=1e-6)
  assert 0 < got.zero_fraction.mean() < 1
  # The model as its own reference: the target is its own output, sum_c xhat_c.
  (own,) = depgraph.collect(
    traced, variables, traced.group(name), batches, mode="exhaustive",
    reference=(traced, variables),
  ).values()  # fmt: skip
  np.testing.assert_allclose(own.cross, own.gram.sum(axis=1), rtol=1e-4)
  np.testing.assert_allclose(own.target_norm, own.gram.sum(), rtol=1e-4)


def test_collect_names_the_layer_with_nans():
  traced = _traced()
  variables = random_variables(SPEC, 8)
  kernel = np.array(variables["params"]["conv2_1"]["kernel"])
  kernel[0, 0, 0, 0] = np.nan
  variables["params"]["conv2_1"]["kernel"] = kernel
  with pytest.raises(FloatingPointError, match="parameter .*conv2_1/kernel"):
    depgraph.collect(
      traced, variables, traced.group("conv2_1"), _batches(1),
      mode="sampled", key=jax.random.key(0),
    )  # fmt: skip
  images = _batches(1)
  images[0]["image"][0, 0, 0, 0] = np.inf
  with pytest.raises(FloatingPointError, match="the output of conv1_1"):
    depgraph.collect(
      traced, random_variables(SPEC, 8), traced.group("conv1_1"), images,
      mode="exhaustive",
    )  # fmt: skip


def test_overflow_names_the_layer_that_is_not_finite():
  """A kernel of extreme scale: the message names a layer whose output
  really is not finite (or says that finite activations overflowed),
  never a finite one as the culprit."""
  traced = _traced()
  variables = random_variables(SPEC, 8)
  variables["params"]["conv1_1"]["kernel"] = variables["params"]["conv1_1"][
    "kernel"
  ] * np.float32(1e38)
  with pytest.raises(FloatingPointError) as raised:
    depgraph.collect(
      traced, variables, traced.group("conv2_1"), _batches(1),
      mode="exhaustive",
    )  # fmt: skip
  message = str(raised.value)
  assert "the output of conv1_1" in message or "overflow" in message, message
  _, state = models.build(SPEC).apply(
    variables, _batches(1)[0]["image"], capture_intermediates=True,
    mutable=["intermediates"],
  )  # fmt: skip
  named = re.search(r"the output of (\S+) \(\w+; first non-finite", message)
  if named:  # The named layer's output is not finite.
    out = state["intermediates"]
    for part in named.group(1).split("/"):
      out = out[part]
    assert not np.isfinite(np.asarray(out["__call__"][0])).all()


def test_collect_does_not_recompile_per_batch(monkeypatch):
  variables = random_variables(SPEC, 8)
  traced = _traced()
  seen = []
  original = program_lib.evaluate

  def spy(*args, **kwargs):
    seen.append(1)  # Runs once per trace, not once per call.
    return original(*args, **kwargs)

  monkeypatch.setattr(program_lib, "evaluate", spy)
  depgraph.collect(
    traced, variables, traced.group("conv2_1"), _batches(4), mode="sampled",
    key=jax.random.key(0),
  )  # fmt: skip
  assert len(seen) == 1
