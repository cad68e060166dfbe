"""The zoo of user-written models through the product: a 3-count vmapped
sweep and the layer-by-layer procedure (2 groups), each pruned model equal
to its materialised counterpart."""

import dataclasses

import jax
import numpy as np
import pytest

from tests import zoo
from thinet_jax import depgraph, factories, procedure, train
from thinet_jax.options import PruneOptions


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_vmapped_sweep_equals_materialised_models(name):
  apply_fn, variables, x, _, _ = zoo.build(name)
  model = depgraph.trace(apply_fn, variables, x)
  group = model.groups[0]
  per_consumer = depgraph.collect(model, variables, group, [x])
  width = group.width
  counts = sorted({max(1, width // 4), max(1, width // 2), width - 1})
  options = PruneOptions(
    mode="exhaustive", centred=name in CENTRED,
    criterion="forward_centred" if name in CENTRED else "thinet",
  )  # fmt: skip
  sw = depgraph.ratio_sweep(
    model, variables, group, per_consumer, counts, options
  )
  logits = depgraph.evaluate_variants(model, sw.stacked, x)
  assert logits.shape[0] == len(counts)
  # The same counts as a joint sweep of this one group, run on the shared
  # kernels (each consumer's input scaled per variant): the same logits.
  joint = depgraph.joint_sweep(
    model, variables, {group.name: per_consumer},
    [{group.name: n} for n in counts], options,
  )  # fmt: skip
  np.testing.assert_allclose(
    depgraph.evaluate_shared(model, variables, joint, x), logits,
    rtol=1e-5, atol=1e-5,
  )  # fmt: skip
  for k, n in enumerate(counts):
    small_model, small = depgraph.materialize(model, variables, group, sw, k)
    assert small_model.width(group) == n
    np.testing.assert_allclose(
      logits[k], small_model.apply(small, x), rtol=1e-5, atol=1e-5
    )
    # The graph step with the same count builds the same model.
    _, stepped, record = depgraph.prune_step(
      model, variables, group, per_consumer, n, options
    )
    assert record.kept == sw.keeps[k].tolist()
    np.testing.assert_allclose(record.relative_error, sw.errors[k], rtol=1e-6)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      stepped, small,
    )  # fmt: skip


@pytest.mark.parametrize("name", [n for n in zoo.ZOO if n not in zoo.FUNCTIONS])
def test_procedure_on_the_zoo(tmp_path, name):
  """Two groups through `procedure.run_procedure` on the factory's Net
  (statistics, selection, least squares, surgery, BatchNorm re-estimation,
  a fine-tune step after each group), checkpointed; every step's model
  directory rebuilds to a model with the same logits as the run's own."""
  x = np.asarray(zoo.build(name)[2])
  size = x.shape[1]
  net, init = factories.build(
    "tests.zoo:module_of", size, 3, kwargs={"name": name}
  )
  variables = zoo.perturb(init)
  names = [g.name for g in net.traced.groups][:2]
  plans = procedure.plan(net, names, 0.5, finetune_epochs=1.0)
  steps = []

  def finetune(model, v, workdir, epochs, lr, desc, step):
    # One SGD step through the model's training function (grad of the
    # pruned program), so the fine-tune path is exercised.
    def loss(params):
      logits, _ = model.train({**v, "params": params}, x, jax.random.key(0))
      return (logits**2).mean()

    grads = jax.grad(loss)(v["params"])
    params = jax.tree.map(lambda p, g: p - 1e-3 * g, v["params"], grads)
    steps.append(step)
    return {**v, "params": params}

  options = PruneOptions(
    criterion="forward_centred" if name in CENTRED else "thinet",
    centred=name in CENTRED, bn_batches=1 if "batch_stats" in init else 0,
    target="original", mode="exhaustive",
  )  # fmt: skip
  model, final, records = procedure.run_procedure(
    net, variables, plans, stats_batches=lambda i: [{"image": x}],
    finetune=finetune, evaluate=lambda m, v: {"accuracy": 0.0},
    workdir=str(tmp_path), image_size=size, options=options, progress=False,
  )  # fmt: skip
  assert steps == list(range(len(names)))  # a model may have one group
  for g, r in zip(names, records, strict=True):
    assert r["group"] == g and r["width_after"] == r["width_before"] // 2
  assert records[-1]["flops_after"] < records[0]["flops_before"]
  last = procedure.step_dir(str(tmp_path), len(plans) - 1, plans[-1])
  last += "/finetuned"
  rebuilt, loaded, _ = train.load_model(last)
  np.testing.assert_allclose(
    rebuilt.infer(loaded, x), model.infer(final, x), rtol=1e-5, atol=1e-5
  )
  assert dataclasses.asdict(plans[0])["name"] == names[0]


# Zoo models whose first consumers all take a mean shift (bias or norm).
# one_conv_residual: each block's conv reads and writes the stream, so its
# shift is cut to the kept channels (issue 34: it crashed in surgery).
CENTRED = ("plain_cnn", "examples_resnet", "mlp", "one_conv_residual")


@pytest.mark.parametrize("name", ["examples_resnet", "mobilenet_v2"])
def test_joint_sweep_variants_equal_the_groups_pruned_in_turn(name):
  """Two groups pruned together at two count settings: each masked
  variant's logits equal the real model built by slicing the groups one
  after another with the same kept sets, scales and shifts (a shift of a
  consumer whose output channels the other group already sliced is cut to
  the kept ones: mobilenet's project conv writes the stem's stream)."""
  from thinet_jax.depgraph.step import fit

  apply_fn, variables, x, _, _ = zoo.build(name)
  model = depgraph.trace(apply_fn, variables, x)
  options = PruneOptions(
    mode="exhaustive", centred=True, criterion="forward_centred",
    target="original",
  )  # fmt: skip
  groups = model.groups[:2]
  per_group = {
    g.name: depgraph.collect(
      model, variables, g, [x], reference=(model, variables)
    )
    for g in groups
  }  # fmt: skip
  counts = [
    {g.name: max(1, g.width // 2) for g in groups},
    {g.name: max(1, g.width // 4) for g in groups},
  ]
  sw = depgraph.joint_sweep(model, variables, per_group, counts, options)
  stacked = depgraph.stack(model, variables, sw)
  logits = depgraph.evaluate_variants(model, stacked, x)
  shared = depgraph.evaluate_shared(model, variables, sw, x)
  np.testing.assert_allclose(shared, logits, rtol=1e-5, atol=1e-5)
  for k in range(len(counts)):
    m, v = model, variables
    for g in groups:
      keep = sw.keeps[k][g.name]
      assert len(keep) == counts[k][g.name]
      scales, shift, _ = fit(per_group[g.name], keep, options)
      by_name = {c.name: c for c in g.consumers}
      shift = {c: s[m.mask(by_name[c].shift[0], 0)] for c, s in shift.items()}
      m, v = depgraph.prune(m, v, m.group(g.name), keep, scales, shift)
    np.testing.assert_allclose(logits[k], m.apply(v, x), rtol=1e-5, atol=1e-5)
    assert depgraph.count(sw.shapes[k], x) == depgraph.count(m, x)
    small, small_vars = depgraph.materialize_joint(model, variables, sw, k)
    np.testing.assert_allclose(
      small.apply(small_vars, x), logits[k], rtol=1e-5, atol=1e-5
    )
    # A masked variant (as fine-tuned) sliced without rescaling again.
    variant = jax.tree.map(lambda a, k=k: a[k], stacked)
    small, small_vars = depgraph.materialize_joint(
      model, variant, sw, k, rescale=False
    )
    np.testing.assert_allclose(
      small.apply(small_vars, x), logits[k], rtol=1e-5, atol=1e-5
    )
    masks = jax.tree.map(
      lambda a, k=k: np.asarray(a[k]),
      depgraph.param_masks(model, variables, sw),
    )
    # Zero exactly where the variant's params are zero and the original's
    # are not (the removed consumer rows).
    for mask, got, orig in zip(
      jax.tree.leaves(masks), jax.tree.leaves(variant["params"]),
      jax.tree.leaves(variables["params"]), strict=True,
    ):  # fmt: skip
      removed = (np.asarray(got) == 0) & (np.asarray(orig) != 0)
      np.testing.assert_array_equal(mask == 0, removed)
