"""Budget allocation on any traced model: the error curves are the fit the
step then performs, the cost model is exact, and every allocated group's
predicted error is the one measured after surgery.

Ground truths: `prune_step`'s own record at each count (the curve must
reproduce it), the traced program's counted params and FLOPs of the
pruned shapes (the cost model must reproduce them), and each consumer's
output captured from the pruned and the unpruned model, with the best
per-channel shift computed here for the centred fit (the measured error).
"""

import numpy as np
import pytest

from tests import zoo
from thinet_jax import allocate, depgraph
from thinet_jax.options import PruneOptions

PAPER = PruneOptions(mode="exhaustive")
DEFAULT = PruneOptions(
  mode="exhaustive", criterion="forward_centred", centred=True,
  target="original",
)  # fmt: skip
MODELS = ("plain_cnn", "examples_resnet", "mobilenet_v2", "densenet_block")


def _model(name):
  fn, variables, x, _, _ = zoo.build(name)
  return depgraph.trace(fn, variables, x), variables, x


def _stats(model, variables, group, x, options):
  reference = (model, variables) if options.target == "original" else None
  return depgraph.collect(
    model, variables, group, [x, x[::-1] * 0.5], reference=reference
  )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("options", [PAPER, DEFAULT], ids=["paper", "default"])
def test_the_curve_is_what_the_step_reports(name, options):
  model, variables, x = _model(name)
  for group in model.groups[:2]:
    per_consumer = _stats(model, variables, group, x, options)
    curve = depgraph.error_curve(model, variables, group, per_consumer, options)
    width = group.width
    assert curve.shape == (width,)
    for n in sorted({1, max(1, width // 3), width // 2 or 1, width - 1}):
      if n < 1:
        continue
      _, _, rec = depgraph.prune_step(
        model, variables, group, per_consumer, n, options
      )
      assert abs(curve[n - 1] - rec.relative_error) <= 2e-4 * max(
        1.0, rec.relative_error
      ), (group.name, n)


@pytest.mark.parametrize("name", ["examples_resnet", "mobilenet_v2"])
@pytest.mark.parametrize("metric", ["flops", "params"])
def test_the_cost_model_is_exact(name, metric):
  model, _, x = _model(name)
  names = [g.name for g in model.groups]
  costs = depgraph.cost_model(model, names, x, metric=metric)
  assert costs.cost(costs.widths) == depgraph.count(model, x)[metric]
  rng = np.random.default_rng(0)
  for _ in range(4):
    counts = [int(rng.integers(1, w + 1)) for w in costs.widths]
    m = model
    for g, n in zip(names, counts, strict=True):
      m = depgraph.surgery.prune_shapes(m, m.group(g), np.arange(n))
    assert costs.cost(counts) == pytest.approx(
      depgraph.count(m, x)[metric], abs=0.5
    )


def _measured(model, variables, pruned, small, group, x, centred):
  """Mean over the group's consumers of |t - y - s|^2 / |t|^2: t the
  unpruned model's consumer output, y the pruned one's, s the best
  per-output-channel shift (0 for the uncentred fit)."""
  errors = []
  for c in {c.name: c for c in group.consumers}.values():
    t = np.asarray(model.capture(variables, x, values=[c.output])[c.output])
    y = np.asarray(pruned.capture(small, x, values=[c.output])[c.output])
    assert y.shape == t.shape, "a consumer's own output lost channels"
    d = (t - y).reshape(-1, t.shape[-1]).astype(np.float64)
    if centred:
      d = d - d.mean(axis=0)
    errors.append(float((d**2).sum() / (t.astype(np.float64) ** 2).sum()))
  return float(np.mean(errors))


@pytest.mark.parametrize("options", [PAPER, DEFAULT], ids=["paper", "default"])
def test_every_allocated_group_has_its_predicted_error(options):
  """examples_resnet, every group, half its FLOPs: the counts meet the
  target on the pruned model, and each group pruned at its count (one
  shot, from the unpruned model's statistics, as the curves were made)
  loses exactly the error its curve predicted."""
  model, variables, x = _model("examples_resnet")
  batches = np.concatenate([x, x[::-1] * 0.5])
  per_group = {
    g.name: _stats(model, variables, g, x, options) for g in model.groups
  }
  counts, curves = depgraph.allocation(
    model, variables, per_group, 0.5, x, metric="flops", options=options
  )
  widths = {g.name: g.width for g in model.groups}
  assert any(counts[n] < widths[n] for n in counts)
  m = model
  for g, n in counts.items():
    m = depgraph.surgery.prune_shapes(m, m.group(g), np.arange(n))
  full = depgraph.count(model, x)["flops"]
  assert depgraph.count(m, x)["flops"] <= 0.5 * full
  checked = 0
  for g, n in counts.items():
    if n == widths[g]:
      continue
    group = model.group(g)
    pruned, small, rec = depgraph.prune_step(
      model, variables, group, per_group[g], n, options
    )
    measured = _measured(
      model, variables, pruned, small, group, batches, options.centred
    )
    assert measured == pytest.approx(curves[g][n - 1], rel=2e-3, abs=1e-5), g
    assert rec.relative_error == pytest.approx(curves[g][n - 1], abs=2e-4)
    checked += 1
  assert checked >= 2


def test_allocate_spends_where_the_curve_is_flat():
  """A planted ground truth: two groups of equal cost, one whose error
  never rises until 1 channel is left, one that loses error linearly."""
  costs = allocate.CostModel(
    ("flat", "steep"), np.array([8, 8]), 16.0, np.array([1.0, 1.0]),
    np.zeros((2, 2)),
  )  # fmt: skip
  flat = np.r_[1.0, np.zeros(7)]
  steep = np.linspace(0.7, 0.0, 8)
  counts = allocate.allocate({"flat": flat, "steep": steep}, costs, 0.75)
  assert counts == {"flat": 4, "steep": 8}
