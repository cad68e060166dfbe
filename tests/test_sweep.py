"""Ratio sweeps on the presets: masked variants (the graph's joint sweep)
against the presets' own surgery and models, shared-kernel evaluation,
vmapped fine-tuning, error curves against brute force, allocation against
its budget."""

import json
import os
import subprocess
import sys

import flax
import jax
import ml_collections
import numpy as np
import pytest

from thinet_jax import (
  allocate,
  depgraph,
  factories,
  groups,
  models,
  presets,
  profile,
  reconstruct,
  select,
  solve,
  train,
  variants,
)
from thinet_jax.options import PruneOptions

from conftest import SPECS, random_variables

SIZE = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _samples(n=400, c=7, seed=0):
  """Explicit contributions xhat [N, C] with correlated channels."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(n, 3))
  mix = rng.normal(size=(3, c))
  return base @ mix + 0.3 * rng.normal(size=(n, c)) + 0.5


def _lstsq_error(x, keep):
  """Brute force: least squares on the explicit samples."""
  y = x.sum(axis=1)
  w = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
  r = y - x[:, keep] @ w
  return w, (r @ r) / (y @ y)


def test_keep_masks_are_the_last_n_of_the_order():
  rng = np.random.default_rng(0)
  order = rng.permutation(9)
  counts = [1, 4, 9]
  masks = np.asarray(solve.keep_masks(order, counts))
  for n, mask in zip(counts, masks, strict=True):
    want = np.zeros(9)
    want[order[9 - n :]] = 1
    np.testing.assert_array_equal(mask, want)


@pytest.mark.parametrize("ridge", [0.0, 3.0])
def test_masked_scales_equal_ridge_scales_on_the_kept(ridge):
  x = _samples()
  gram = (x.T @ x).astype(np.float32)
  order = np.random.default_rng(1).permutation(7)
  masks = solve.keep_masks(order, [1, 3, 6, 7])
  scales = np.asarray(solve.masked_scales(gram, masks, ridge))
  for mask, w in zip(np.asarray(masks), scales, strict=True):
    keep = np.flatnonzero(mask)
    want = reconstruct.ridge_scales(gram, keep, ridge)
    np.testing.assert_allclose(w[keep], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(w[mask == 0], 0.0)


def test_error_curve_equals_brute_force_least_squares():
  x = _samples()
  gram = (x.T @ x).astype(np.float32)
  order = np.random.default_rng(2).permutation(7)
  curve = solve.error_curve(gram, order)
  plain = solve.error_curve(gram, order, least_squares=False)
  y = x.sum(axis=1)
  for n in range(1, 8):
    keep = np.sort(order[7 - n :])
    _, want = _lstsq_error(x, keep)
    np.testing.assert_allclose(curve[n - 1], want, rtol=1e-3, atol=1e-6)
    r = y - x[:, keep].sum(axis=1)
    np.testing.assert_allclose(
      plain[n - 1], (r @ r) / (y @ y), rtol=1e-3, atol=1e-6
    )
  assert np.all(np.diff(curve) <= 1e-6)  # Nested kept sets: never worse.
  assert abs(curve[-1]) < 1e-5


def _images(spec, n=6, seed=3):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(n, SIZE, SIZE, spec.in_channels))
  return {"image": image.astype(np.float32)}


def _sweep(spec, variables, ratios, criterion="thinet"):
  """(traced preset, joint sweep of every group): each entry of `ratios`
  one shared keep ratio or one per group; exhaustive statistics."""
  traced = factories.graph_of(spec, SIZE)
  names = [g.name for g in groups.groups(spec)]
  per_group = {
    n: depgraph.collect(
      traced, variables, traced.group(n), [_images(spec)], mode="exhaustive"
    )
    for n in names
  }  # fmt: skip
  counts = []
  for r in ratios:
    per = list(r) if isinstance(r, list) else [r] * len(names)
    counts.append({
      n: select.keep_count(traced.group(n).width, x)
      for n, x in zip(names, per, strict=True)
    })  # fmt: skip
  options = PruneOptions(criterion=criterion, mode="exhaustive")
  keys = {n: jax.random.key(0) for n in names}
  sw = depgraph.joint_sweep(traced, variables, per_group, counts, options, keys)
  return traced, sw


def _variant(stacked, k):
  return jax.tree.map(lambda x: x[k], stacked)


@pytest.mark.parametrize("name", ["vgg_bn_fc", "vgg_plain_gap", "resnet_caffe"])
def test_masked_variant_equals_materialised_model(name):
  """Every variant of a preset: the stacked masked variables through the
  preset's own Linen module, the shared-kernel evaluation and the model
  sliced by the graph, run as the preset at the variant's widths, give
  the same logits."""
  spec = SPECS[name]
  variables = random_variables(spec, SIZE)
  ratios = [0.3, 0.5, [1.0, 0.4] + [0.7] * 20, 1.0]
  ratios[2] = ratios[2][: len(groups.groups(spec))]
  traced, sw = _sweep(spec, variables, ratios)
  stacked = depgraph.stack(traced, variables, sw)
  x = _images(spec, seed=9)["image"]
  shared = depgraph.evaluate_shared(traced, variables, sw, x)
  for k in range(len(ratios)):
    masked = models.build(spec).apply(_variant(stacked, k), x)
    _, small_vars = depgraph.materialize_joint(traced, variables, sw, k)
    small_spec = groups.with_widths(spec, sw.counts[k])
    small = models.build(small_spec).apply(small_vars, x)
    np.testing.assert_allclose(small, masked, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shared[k], masked, rtol=1e-5, atol=1e-5)
    for n, c in sw.counts[k].items():
      assert groups.get(small_spec, n).width == c
  # Keeping everything with least squares on complete statistics changes
  # nothing: the scales are 1.
  np.testing.assert_allclose(
    models.build(spec).apply(_variant(stacked, 3), x),
    models.build(spec).apply(variables, x),
    rtol=1e-4, atol=1e-4,
  )  # fmt: skip


def _batches(spec, n, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    yield {
      "image": rng.normal(size=(4, SIZE, SIZE, spec.in_channels)).astype(
        np.float32
      ),
      "label": rng.integers(0, spec.num_classes, 4).astype(np.int32),
    }


def _tx():
  config = ml_collections.ConfigDict(
    dict(
      learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
      schedule="constant", warmup_epochs=0.0, num_epochs=1.0,
    )
  )  # fmt: skip
  return train.optimizer(config, steps_per_epoch=10)


def test_vmapped_finetune_keeps_pruned_entries_zero():
  spec = SPECS["resnet_torchvision"]  # Every kind of layer and mask.
  variables = random_variables(spec, SIZE)
  traced, sw = _sweep(spec, variables, [0.4, 0.7], criterion="weight_sum")
  stacked = depgraph.stack(traced, variables, sw)
  masks = depgraph.param_masks(traced, variables, sw)
  tuned, history = variants.finetune_variants(
    spec, stacked, masks, _batches(spec, 3), _tx(), steps=3, progress=False
  )
  assert len(history) == 3 and len(history[0]["loss"]) == 2
  flat_t = flax.traverse_util.flatten_dict(tuned["params"], sep="/")
  flat_m = flax.traverse_util.flatten_dict(masks, sep="/")
  flat_0 = flax.traverse_util.flatten_dict(stacked["params"], sep="/")
  pruned = moved = 0
  for path, m in flat_m.items():
    t, m = np.asarray(flat_t[path]), np.asarray(m)
    np.testing.assert_array_equal(t[m == 0], 0.0)  # Exactly zero.
    pruned += int((m == 0).sum())
    moved += int((t[m == 1] != np.asarray(flat_0[path])[m == 1]).sum())
  assert pruned > 0 and moved > 0
  # Each vmapped variant trained like one variant on its own.
  one = _variant(stacked, 1)
  mask = _variant(masks, 1)
  state = train.create_state(one, variants.masked_optimizer(_tx(), mask))
  step = jax.jit(
    train.make_train_step(spec, variants.masked_optimizer(_tx(), mask))
  )
  for batch in _batches(spec, 3):
    state, _ = step(state, batch)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
    train.variables_of(state), _variant(tuned, 1),
  )  # fmt: skip
  # The fine-tuned variant materialises with the same logits.
  x = _images(spec, seed=5)["image"]
  _, small_vars = depgraph.materialize_joint(
    traced, _variant(tuned, 0), sw, 0, rescale=False
  )
  small_spec = groups.with_widths(spec, sw.counts[0])
  np.testing.assert_allclose(
    models.build(small_spec).apply(small_vars, x),
    models.build(spec).apply(_variant(tuned, 0), x),
    rtol=1e-5, atol=1e-5,
  )  # fmt: skip


def test_vmapped_evaluation_equals_one_model_at_a_time():
  spec = SPECS["vgg_bn_gap"]
  variables = random_variables(spec, SIZE)
  traced, sw = _sweep(spec, variables, [0.3, 0.6, 1.0], criterion="apoz")
  stacked = depgraph.stack(traced, variables, sw)
  batches = list(_batches(spec, 3, seed=4))
  batches[-1]["mask"] = np.array([1, 1, 0, 0], np.float32)
  for b in batches[:-1]:
    b["mask"] = np.ones(4, np.float32)
  results = variants.evaluate_variants(spec, stacked, batches)
  shared = variants.evaluate_shared(spec, traced, variables, sw, batches)
  for a, b in zip(results, shared, strict=True):
    assert a["accuracy"] == b["accuracy"] and a["examples"] == b["examples"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
  for k, got in enumerate(results):
    _, small_vars = depgraph.materialize_joint(traced, variables, sw, k)
    small_spec = groups.with_widths(spec, sw.counts[k])
    want = train.evaluate(small_spec, small_vars, batches)
    assert got["examples"] == want["examples"] == 10
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)


def _cost_model(spec, names, size, metric="flops"):
  return depgraph.cost_model(
    factories.graph_of(spec, size), names, factories.example(spec, size),
    metric=metric,
  )  # fmt: skip


def test_cost_model_is_exact():
  """The graph's cost model of a preset against the preset's own count."""
  spec = presets.get("vgg16-fmnist")
  names = [g.name for g in groups.paper_groups(spec)]
  rng = np.random.default_rng(0)
  for metric in ("flops", "params"):
    model = _cost_model(spec, names, 32, metric)
    for _ in range(5):
      counts = [int(rng.integers(1, w + 1)) for w in model.widths]
      s = groups.with_widths(spec, dict(zip(names, counts, strict=True)))
      assert model.cost(counts) == profile.count(s, 32)[metric]


@pytest.mark.parametrize("target", [0.25, 0.5, 0.8])
def test_allocation_meets_the_target(target):
  spec = presets.get("vgg16-fmnist")
  names = [g.name for g in groups.paper_groups(spec)]
  model = _cost_model(spec, names, 32)
  rng = np.random.default_rng(int(target * 100))
  curves = {
    n: np.sort(rng.uniform(0, 1, w))[::-1] * (1 - np.arange(w) / w)
    for n, w in zip(names, model.widths, strict=True)
  }
  counts = allocate.allocate(curves, model, target)
  for n in names:
    assert 1 <= counts[n] <= groups.get(spec, n).width
  s = groups.with_widths(spec, counts)
  ratio = profile.count(s, 32)["flops"] / profile.count(spec, 32)["flops"]
  assert target * 0.98 <= ratio <= target


def test_allocation_prunes_the_free_group_first():
  spec = presets.get("vgg16-fmnist")
  names = ["conv3_1", "conv3_2"]
  model = _cost_model(spec, names, 32)
  curves = {
    "conv3_1": np.zeros(64),  # Removing costs no error at all.
    "conv3_2": np.linspace(1.0, 0.0, 64),
  }
  full = model.cost(model.widths)
  counts = allocate.allocate(curves, model, 0.9)
  assert counts["conv3_2"] == 64  # Untouched while conv3_1 had room.
  assert model.cost([counts[n] for n in names]) <= 0.9 * full


def test_bad_sweep_input_is_a_clear_error():
  spec = SPECS["vgg_bn_fc"]
  variables = random_variables(spec, SIZE)
  model = _cost_model(spec, ["conv1_1"], SIZE)
  with pytest.raises(ValueError, match="target must be in"):
    allocate.allocate({"conv1_1": np.zeros(4)}, model, 1.5)
  with pytest.raises(ValueError, match="out of reach"):
    allocate.allocate({"conv1_1": np.zeros(4)}, model, 0.01)
  with pytest.raises(ValueError, match="one entry per keep count"):
    allocate.allocate({"conv1_1": np.zeros(3)}, model, 0.9)
  with pytest.raises(ValueError, match="keep_ratio must be in"):
    _sweep(spec, variables, [0.0])
  traced = factories.graph_of(spec, SIZE)
  per_group = {
    "conv1_1": depgraph.collect(
      traced, variables, traced.group("conv1_1"), [_images(spec)],
      mode="exhaustive",
    )
  }  # fmt: skip
  with pytest.raises(ValueError, match="keep counts lie in"):
    depgraph.joint_sweep(traced, variables, per_group, [{"conv1_1": 5}])


@pytest.mark.slow
def test_sweep_command_runlocal(tmp_path, small_model):
  result = subprocess.run(
    [sys.executable, "-m", "train.sweep",
     "--config=configs/fmnist_vgg16_sweep.py:runlocal",
     f"--workdir={tmp_path}", f"--config.init_checkpoint={small_model}"],
    capture_output=True, text=True, cwd=ROOT, timeout=900,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("sweep.json", "sweep.md", "sweep.png"):
    assert (tmp_path / name).exists(), name
  out = json.loads((tmp_path / "sweep.json").read_text())
  assert list(out["lines"]) == [
    "thinet", "weight_sum", "apoz", "random", "thinet-allocated"
  ]  # fmt: skip
  spec = presets.get("vgg16-fmnist")
  for label, rows in out["lines"].items():
    assert len(rows) == 2
    for row, ratio in zip(rows, [0.5, 0.75], strict=True):
      counts = row["counts"]
      s = spec
      for n, c in counts.items():
        s = groups.with_width(s, groups.get(s, n), c)
      assert row["flops"] == profile.count(s, 32)["flops"]
      assert 0 <= row["accuracy"] <= 1 and "accuracy_finetuned" in row
      if label != "thinet-allocated":
        assert counts == {
          "conv1_1": int(16 * ratio),
          "conv2_1": int(32 * ratio),
        }
  uniform = out["lines"]["thinet"]
  for a, u in zip(out["lines"]["thinet-allocated"], uniform, strict=True):
    assert a["flops"] <= u["flops"]  # Allocated to the same budget.
  assert "| thinet |" in result.stdout
