"""Training library, checkpoints, export and the procedure's commands."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import default
from thinet_jax import export, models, nets, presets, procedure, train
from thinet_jax.spec import ModelSpec

import reference
from conftest import SPECS, kill_at_first_checkpoint, random_variables

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = ModelSpec(
  family="vgg", layers=(4, "M", 6), head="fc", fc_widths=(8,), dropout=0.3,
  batch_norm=True, num_classes=10, in_channels=1,
)  # fmt: skip


def _config(**changes):
  config = default.get_config()
  config.update(changes)
  return config


def _batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {
    "image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
    "label": rng.integers(0, 10, n).astype(np.int32),
  }


def test_train_steps_lower_the_loss_and_do_not_recompile():
  config = _config(learning_rate=0.05, warmup_epochs=0.0, schedule="constant")
  tx = train.optimizer(config, steps_per_epoch=10)
  mesh = train.data_mesh()  # As `fit` places state and batches.
  state = train.create_state(random_variables(SPEC, 8), tx)
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, P()))
  step = jax.jit(train.make_train_step(SPEC, tx), donate_argnums=0)
  batch = train.shard_batch(_batch(), mesh)
  losses = []
  for _ in range(15):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.7 * losses[0], losses
  assert step._cache_size() == 1
  assert int(state.step) == 15


def test_distillation_loss_is_tempered_kl():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 5, 7)) * 3
  temperature = 2.5

  def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  p, q = softmax(t / temperature), softmax(s / temperature)
  want = temperature**2 * np.mean(np.sum(p * np.log(p / q), axis=1))
  got = train.distillation_loss(jnp.asarray(s), jnp.asarray(t), temperature)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(float(train.distillation_loss(s, s, temperature))) < 1e-6


def test_distillation_pulls_the_student_to_its_teacher():
  """weight 1: the loss is the KL alone, 0 when the teacher is the
  student; from another start, a few sharded steps bring the student's
  logits closer to the teacher's. weight 0: exactly the plain step."""
  config = _config(
    learning_rate=0.05, warmup_epochs=0.0, schedule="constant",
    weight_decay=0.0,
  )  # fmt: skip
  tx = train.optimizer(config, steps_per_epoch=10)
  mesh = train.data_mesh()
  # No BatchNorm, no dropout: the student's training forward is then the
  # same function as the teacher's inference forward.
  spec = SPEC.replace(dropout=0.0, batch_norm=False)
  student = random_variables(spec, 8, seed=1)
  batch = _batch()
  itself = train.Teacher(spec, student, temperature=2.0, weight=1.0)
  step = train.sharded_train_step(spec, tx, mesh, teacher=itself)
  state = train.create_state(student, tx)
  _, metrics = step(state, train.shard_batch(batch, mesh))
  assert abs(float(metrics["loss"])) < 1e-5

  teacher_vars = random_variables(spec, 8, seed=2)
  teacher = train.Teacher(spec, teacher_vars, temperature=2.0, weight=1.0)
  model = models.build(spec)

  def gap(variables):
    return float(
      train.distillation_loss(
        model.apply(variables, batch["image"]),
        model.apply(teacher_vars, batch["image"]), 2.0,
      )
    )  # fmt: skip

  step = train.sharded_train_step(spec, tx, mesh, teacher=teacher)
  state = train.create_state(student, tx)
  for _ in range(20):
    state, _ = step(state, train.shard_batch(batch, mesh))
  assert gap(train.variables_of(state)) < 0.6 * gap(student)

  off = train.Teacher(spec, teacher_vars, weight=0.0)
  plain = jax.jit(train.make_train_step(spec, tx))
  with_off = jax.jit(train.make_train_step(spec, tx, teacher=off))
  state = train.create_state(student, tx)
  a, ma = plain(state, batch)
  b, mb = with_off(state, batch, teacher_vars)
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
    a.params, b.params,
  )  # fmt: skip
  with pytest.raises(ValueError, match="weight must be in"):
    train.Teacher(spec, teacher_vars, weight=1.5)


def test_feature_loss_is_the_shared_maps_relative_error():
  rng = np.random.default_rng(0)
  t = {"a": rng.normal(size=(2, 3, 3, 4)), "b": rng.normal(size=(2, 5)),
       "c": rng.normal(size=(2, 6))}  # fmt: skip
  s = {"a": rng.normal(size=(2, 3, 3, 4)), "b": rng.normal(size=(2, 5)),
       "c": rng.normal(size=(2, 3)), "d": rng.normal(size=(2, 6))}  # fmt: skip
  # "c" differs in shape (a pruned layer), "d" is the student's own.
  want = np.mean(
    [np.sum((s[k] - t[k]) ** 2) / np.sum(t[k] ** 2) for k in ("a", "b")]
  )
  got = train.feature_loss(jax.tree.map(jnp.asarray, s), t)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match="no feature map with the same name"):
    train.feature_loss({"c": s["c"]}, t)


def test_a_resnets_feature_maps_are_its_block_outputs():
  """The last block's map, averaged and put through fc by NumPy, gives the
  logits; the maps are the blocks' in call order, in both modes."""
  spec = SPECS["resnet_caffe"]
  net = nets.of(spec)
  variables = random_variables(spec, 8)
  x = _batch(n=4)["image"].repeat(2, axis=-1)
  logits, stats, maps = net.features(variables, x)
  assert stats is None
  assert list(maps) == list(spec.resnet_block_names())
  fc = variables["params"]["fc"]
  last = np.asarray(maps[spec.resnet_block_names()[-1]])
  want = last.mean(axis=(1, 2)) @ np.asarray(fc["kernel"]) + fc["bias"]
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits, net.infer(variables, x), rtol=1e-5)
  t_logits, new_stats, t_maps = net.features(variables, x, jax.random.key(0))
  want_logits, want_stats = net.train(variables, x, jax.random.key(0))
  np.testing.assert_allclose(t_logits, want_logits, rtol=1e-5)
  jax.tree.map(np.testing.assert_allclose, new_stats, want_stats)
  assert list(t_maps) == list(maps)
  vgg = nets.of(SPECS["vgg_bn_fc"])
  _, _, vgg_maps = vgg.features(random_variables(vgg.spec, 8), x)
  assert [k.split("/")[-1] for k in vgg_maps] == ["bn1_1", "bn2_1", "bn2_2"]


def test_feature_distillation_holds_a_pruned_resnets_blocks():
  """A ResNet with narrower branch2a/2b shares every block output with
  its teacher: sharded steps with the feature term bring the student's
  maps closer to the teacher's than the same steps on the labels alone;
  for the teacher itself the term is 0 (the loss is the plain step's)."""
  config = _config(
    learning_rate=0.005, warmup_epochs=0.0, schedule="constant",
    weight_decay=0.0,
  )  # fmt: skip
  tx = train.optimizer(config, steps_per_epoch=10)
  mesh = train.data_mesh()
  spec = SPECS["resnet_nobn"]
  teacher_vars = random_variables(spec, 8, seed=3)
  batch = _batch(n=16)
  batch["image"] = batch["image"].repeat(2, axis=-1)
  batch["label"] = batch["label"] % spec.num_classes
  itself = train.Teacher(spec, teacher_vars, weight=0.0, features=10.0)
  plain = train.Teacher(spec, teacher_vars, weight=0.0)
  step = jax.jit(train.make_train_step(spec, tx, teacher=itself))
  _, with_term = step(train.create_state(teacher_vars, tx), batch, teacher_vars)
  step = jax.jit(train.make_train_step(spec, tx, teacher=plain))
  _, without = step(train.create_state(teacher_vars, tx), batch, teacher_vars)
  np.testing.assert_allclose(with_term["loss"], without["loss"], rtol=1e-6)

  small = spec.replace(block_widths=tuple((1, 2) for _ in spec.block_widths))
  student = random_variables(small, 8, seed=4)
  net, teacher_net = nets.of(small), nets.of(spec)
  _, _, t_maps = teacher_net.features(teacher_vars, batch["image"])

  def error(variables):
    _, _, maps = net.features(variables, batch["image"])
    return float(train.feature_loss(maps, t_maps))

  ends = {}
  for name, teacher in (("hints", itself), ("plain", plain)):
    step = train.sharded_train_step(small, tx, mesh, teacher=teacher)
    state = train.create_state(student, tx)
    for _ in range(25):
      state, _ = step(state, train.shard_batch(batch, mesh))
    ends[name] = error(train.variables_of(state))
  assert ends["hints"] < 0.6 * min(ends["plain"], error(student)), ends
  with pytest.raises(ValueError, match="feature distillation weight"):
    train.Teacher(spec, teacher_vars, features=-1.0)


@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_on_kernels_or_on_everything(decay_all):
  config = _config(
    learning_rate=0.1, weight_decay=0.5, momentum=0.0, nesterov=False,
    warmup_epochs=0.0, schedule="constant", decay_all=decay_all,
  )  # fmt: skip
  tx = train.optimizer(config, steps_per_epoch=1)
  params = {
    "conv": {"kernel": jnp.ones(3), "bias": jnp.ones(3)},
    "bn": {"scale": 2 * jnp.ones(3)},
  }  # fmt: skip
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["conv"]["kernel"], -0.05 * np.ones(3))
  # PyTorch's SGD(weight_decay) reaches biases and BatchNorm too.
  others = -0.05 if decay_all else 0.0
  np.testing.assert_allclose(updates["conv"]["bias"], others * np.ones(3))
  np.testing.assert_allclose(updates["bn"]["scale"], 2 * others * np.ones(3))


def test_schedules():
  config = _config(learning_rate=1.0, num_epochs=10.0, warmup_epochs=1.0,
                   schedule="step", lr_drop_epochs=(5, 8))  # fmt: skip
  lr = train.schedule(config, steps_per_epoch=10)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(49)) == pytest.approx(1.0)
  assert float(lr(51)) == pytest.approx(0.1)
  assert float(lr(85)) == pytest.approx(0.01)
  config.schedule = "cosine"
  lr = train.schedule(config, steps_per_epoch=10)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-6)
  config.schedule = "linear"
  with pytest.raises(ValueError, match="schedule must be"):
    train.schedule(config, 10)


def test_evaluate_counts_masked_examples_once():
  variables = random_variables(SPEC, 8)
  batch = _batch(1)
  logits = np.asarray(models.build(SPEC).apply(variables, batch["image"]))
  mask = np.ones(16, np.float32)
  mask[10:] = 0
  result = train.evaluate(SPEC, variables, [{**batch, "mask": mask}])
  want = np.mean(logits[:10].argmax(-1) == batch["label"][:10])
  assert result["examples"] == 10
  assert result["accuracy"] == pytest.approx(want)
  top5 = np.mean(
    [batch["label"][i] in np.argsort(-logits[i])[:5] for i in range(10)]
  )
  assert result["top5"] == pytest.approx(top5)


@pytest.mark.parametrize("name", ["vgg_bn_fc", "resnet_caffe"])
def test_batch_norm_reestimation(name):
  """Re-estimated on one batch, eval mode reproduces train mode on that
  batch (every BatchNorm now holds that batch's moments); on two batches
  the first BatchNorm holds the population moments of its input (NumPy)."""
  spec = SPECS[name]
  variables = random_variables(spec, 8)
  rng = np.random.default_rng(0)
  images = [rng.normal(size=(4, 8, 8, 2)).astype(np.float32) for _ in range(2)]
  model = models.build(spec)
  one = train.reestimate_batch_norm(spec, variables, [{"image": images[0]}])
  assert one["params"] is variables["params"]
  want, _ = model.apply(
    variables, images[0], train=True, mutable=["batch_stats"]
  )
  np.testing.assert_allclose(
    model.apply(one, images[0]), want, rtol=1e-4, atol=1e-4
  )
  padded = {"image": images[1], "mask": np.array([1, 1, 0, 0], np.float32)}
  two = train.reestimate_batch_norm(
    spec, variables, [{"image": images[0]}, padded, {"image": images[1]}]
  )  # the padded batch is skipped
  conv, first = (
    ("conv1_1", "bn1_1") if spec.family == "vgg" else ("conv1", "bn_conv1")
  )
  kernel = np.asarray(variables["params"][conv]["kernel"])
  y = reference.conv(np.concatenate(images).astype(np.float64), kernel)
  stats = two["batch_stats"][first]
  np.testing.assert_allclose(stats["mean"], y.mean(axis=(0, 1, 2)), rtol=1e-4)
  np.testing.assert_allclose(stats["var"], y.var(axis=(0, 1, 2)), rtol=1e-4)
  with pytest.raises(ValueError, match="no unpadded batch"):
    train.reestimate_batch_norm(spec, variables, [padded])


def test_model_directory_restores_in_a_fresh_process(tmp_path):
  variables = random_variables(SPEC, 8)
  train.save_model(str(tmp_path / "model"), SPEC, variables, 8, {"note": 1})
  x = _batch(2)["image"]
  np.save(tmp_path / "x.npy", x)
  code = (
    "import sys, numpy as np\n"
    "from thinet_jax import models, train\n"
    "spec, variables, meta = train.load_model(sys.argv[1])\n"
    "x = np.load(sys.argv[2])\n"
    "np.save(sys.argv[3], models.build(spec).apply(variables, x))\n"
    "assert meta['extra'] == {'note': 1} and meta['image_size'] == 8\n"
  )
  subprocess.run(
    [sys.executable, "-c", code, str(tmp_path / "model"),
     str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
    check=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  want = models.build(SPEC).apply(variables, x)
  np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_export_round_trip(tmp_path):
  variables = random_variables(SPEC, 8)
  path = tmp_path / "model.jaxexport"
  path.write_bytes(export.export_model(SPEC, variables, image_size=8))
  forward = export.load(path.read_bytes())
  for n in (1, 5):  # symbolic batch size
    x = _batch(3, n)["image"]
    np.testing.assert_allclose(
      forward(x), models.build(SPEC).apply(variables, x), rtol=1e-5, atol=1e-5
    )


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    train.load_model(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    train.load_model(str(tmp_path / "empty"))


def test_save_model_replaces_a_model_atomically(tmp_path):
  """Saving twice into one directory (a rerun, train.convert --out an
  existing dir) replaces the model whole and leaves nothing beside it."""
  directory = tmp_path / "model"
  first, second = random_variables(SPEC, 8, 0), random_variables(SPEC, 8, 1)
  train.save_model(str(directory), SPEC, first, 8)
  train.save_model(str(directory), SPEC, second, 8, {"n": 2})
  _, got, meta = train.load_model(str(directory))
  jax.tree.map(np.testing.assert_array_equal, got, second)
  assert meta["extra"] == {"n": 2}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_model_directory_errors_say_what_to_pass(tmp_path):
  variables = random_variables(SPEC, 8)
  (tmp_path / "file").write_text("x")
  with pytest.raises(FileNotFoundError, match="is a file, not a model"):
    train.load_model(str(tmp_path / "file"))
  # A training checkpoint (fit's, with optimizer state and input position).
  _fit(SPEC, tmp_path / "run")
  with pytest.raises(FileNotFoundError, match="is a run's workdir"):
    train.load_model(str(tmp_path / "run"))
  with pytest.raises(FileNotFoundError, match="is a training checkpoint"):
    train.load_model(str(tmp_path / "run" / "checkpoints"))
  # Corrupt: every stored array chunk overwritten with garbage.
  train.save_model(str(tmp_path / "model"), SPEC, variables, 8)
  for f in (tmp_path / "model").rglob("*"):
    if f.is_file() and "/d/" in str(f):
      f.write_bytes(b"\0garbage" * 3)
  with pytest.raises(FileNotFoundError) as raised:
    train.load_model(str(tmp_path / "model"))
  message = str(raised.value)
  assert "is corrupt or truncated" in message and str(tmp_path) in message
  assert "\n" not in message


def test_non_finite_parameters_are_named_at_load(tmp_path):
  variables = random_variables(SPEC, 8)
  kernel = np.array(variables["params"]["conv2_1"]["kernel"])
  kernel.reshape(-1)[[1, 5, 7, 9]] = [np.nan, np.inf, -np.inf, np.nan]
  variables["params"]["conv2_1"]["kernel"] = kernel
  train.save_model(str(tmp_path / "model"), SPEC, variables, 8)
  with pytest.raises(
    FloatingPointError, match="parameter params/conv2_1/kernel has 4 NaN/inf"
  ):
    train.load_model(str(tmp_path / "model"))


def test_evaluation_never_reports_an_accuracy_of_nan_logits():
  """A kernel scaled by 1e38 is finite but overflows the forward pass:
  evaluation refuses and names a layer whose output really is not
  finite."""
  variables = random_variables(SPEC, 8)
  variables["params"]["conv1_1"]["kernel"] = variables["params"]["conv1_1"][
    "kernel"
  ] * np.float32(1e38)
  with pytest.raises(FloatingPointError, match="logits are not finite") as e:
    train.evaluate(SPEC, variables, [_batch()])
  message = str(e.value)
  layer = message.split("the output of ")[1].split(" ")[0]
  _, state = models.build(SPEC).apply(
    variables, _batch()["image"], capture_intermediates=True,
    mutable=["intermediates"],
  )  # fmt: skip
  assert not np.isfinite(
    np.asarray(state["intermediates"][layer]["__call__"][0])
  ).all()


def _fit(spec, workdir, steps=2):
  config = _config(num_epochs=1.0, warmup_epochs=0.0, log_every_steps=1,
                   checkpoint_every_steps=1)  # fmt: skip
  batches = [_batch(i) for i in range(steps)]

  class Data:  # A minimal resumable iterable of batches.
    def __iter__(self):
      return Iterator()

  class Iterator:
    i = 0

    def __next__(self):
      self.i += 1
      return batches[(self.i - 1) % steps]

    def get_state(self):
      return {"i": self.i}

    def set_state(self, state):
      self.i = state["i"]

  return train.fit(
    spec, random_variables(spec, 8), train_data=Data(), eval_data=None,
    config=config, steps_per_epoch=steps, image_size=8, workdir=str(workdir),
    progress=False,
  )  # fmt: skip


def test_checkpoint_of_another_spec_is_refused(tmp_path):
  _fit(SPEC, tmp_path)
  other = SPEC.replace(layers=(4, "M", 5))
  with pytest.raises(train.SpecMismatchError, match="another model"):
    _fit(other, tmp_path)


def test_plan_errors_and_stage_ends():
  spec = SPEC.replace(layers=(4, 4, "M", 6))
  plans = procedure.plan(spec, keep_ratio=0.5, finetune_epochs=1.0,
                        stage_end_epochs=2.0)  # fmt: skip
  assert [(p.name, p.finetune_epochs) for p in plans] == [
    ("conv1_1", 1.0),
    ("conv1_2", 2.0),
  ]  # fmt: skip (paper groups: all stages but the last)
  with pytest.raises(ValueError, match="keep_ratio must be in"):
    procedure.plan(spec, keep_ratio=1.5)
  with pytest.raises(ValueError, match="one per group"):
    procedure.plan(spec, keep_ratio=[0.5, 0.5, 0.5])
  with pytest.raises(KeyError, match="unknown groups"):
    procedure.plan(spec, ["conv7_1"])


def _prune_cmd(workdir, model, *extra):
  return [
    sys.executable, "-m", "train.prune",
    "--config=configs/fmnist_vgg16_thinet.py:runlocal",
    f"--workdir={workdir}", f"--config.init_checkpoint={model}",
    *extra,
  ]  # fmt: skip


@pytest.mark.slow
def test_prune_runlocal_end_to_end(tmp_path, small_model):
  """The default method (forward selection on centred statistics, centred
  fit towards the unpruned model's output, BatchNorm re-estimation,
  distillation) to a FLOPs budget after the ThiNet-GAP head surgery, end
  to end, then the criteria table."""
  result = subprocess.run(
    _prune_cmd(tmp_path, small_model, "--config.budget=0.85",
               "--config.head=gap"),
    capture_output=True, text=True, cwd=ROOT, timeout=900,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("report.json", "report.md", "accuracy.png", "widths.png"):
    assert (tmp_path / name).exists(), name
  import json

  report = json.loads((tmp_path / "report.json").read_text())
  assert [s["group"] for s in report["steps"]] == ["conv1_1", "conv2_1"]
  assert all(
    s["centred"] and s["bn_batches"] > 0 and s["target"] == "original"
    for s in report["steps"]
  )
  # The budget: keep counts from the allocation, FLOPs just under 85%.
  allocation = json.loads(
    (tmp_path / "allocation" / "allocation.json").read_text()
  )
  assert report["allocation"] == allocation
  kept = {s["group"]: s["width_after"] for s in report["steps"]}
  assert kept == allocation["counts"]
  fraction = report["pruned"]["flops"] / report["baseline"]["flops"]
  assert 0.85 * 0.98 <= fraction <= 0.85
  spec, _, _ = train.load_model(str(tmp_path / "model"))
  assert spec.layers[0] == kept["conv1_1"] and spec.layers[2] == "M"
  assert spec.layers[3] == kept["conv2_1"]
  assert list(spec.layers) == report["pruned"]["spec"]["layers"]
  assert f"conv2_1 | 32 -> {kept['conv2_1']}" in result.stdout
  # The head: pool5 and fc6-8 gone, one dense layer on the pooled map.
  head = report["head"]
  assert spec.head == "gap" and spec.layers[-1] != "M" and not spec.fc_widths
  assert head["params"] == report["baseline"]["params"] - 2 * 128 * 129
  assert "| (gap head) |" in result.stdout
  # The criteria table script reads such reports.
  table = subprocess.run(
    [sys.executable, "benchmarks/criteria_table.py", str(tmp_path),
     f"--out={tmp_path / 'criteria.json'}"],
    capture_output=True, text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert table.returncode == 0, table.stderr[-3000:]
  rows = json.loads((tmp_path / "criteria.json").read_text())
  assert rows[0]["criterion"] == "forward_centred"
  assert rows[0]["accuracy"] == report["pruned"]["accuracy"]


@pytest.mark.slow
def test_prune_errors(tmp_path, small_model):
  bad_field = subprocess.run(
    _prune_cmd(tmp_path, small_model, "--config.no_such_field=1"),
    capture_output=True, text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert bad_field.returncode != 0 and "no_such_field" in bad_field.stderr
  missing = subprocess.run(
    _prune_cmd(tmp_path, tmp_path / "none"), capture_output=True, text=True,
    cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert missing.returncode != 0 and "does not exist" in missing.stderr
  other = tmp_path / "resnet"

  resnet = presets.get("resnet-fmnist")
  train.save_model(str(other), resnet, random_variables(resnet, 32), 32)
  wrong_model = subprocess.run(
    _prune_cmd(tmp_path, other), capture_output=True, text=True, cwd=ROOT,
    timeout=300,
  )  # fmt: skip
  assert wrong_model.returncode != 0
  assert "another architecture" in wrong_model.stderr
  bad_ratio = subprocess.run(
    _prune_cmd(tmp_path, small_model, "--config.keep_ratio=1.5"),
    capture_output=True, text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert (
    bad_ratio.returncode != 0 and "keep_ratio must be in" in bad_ratio.stderr
  )
  bad_head = subprocess.run(
    _prune_cmd(tmp_path, small_model, "--config.head=avg"),
    capture_output=True, text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert bad_head.returncode != 0 and "config.head must be" in bad_head.stderr


def _final_variables(workdir):
  _, variables, _ = train.load_model(str(workdir / "model"))
  return variables


@pytest.mark.slow
def test_killed_prune_resumes_to_the_same_result(tmp_path, small_model):
  extra = ("--config.finetune_epochs=8", "--config.stage_end_epochs=8")
  straight = tmp_path / "straight"
  subprocess.run(
    _prune_cmd(straight, small_model, *extra), check=True, cwd=ROOT,
    capture_output=True, timeout=900,
  )  # fmt: skip

  killed = tmp_path / "killed"
  ckpts = killed / "steps" / "01_conv2_1" / "finetune" / "checkpoints"
  kill_at_first_checkpoint(_prune_cmd(killed, small_model, *extra), ckpts, ROOT)
  # Killed inside conv2_1's fine-tune: it had started and not finished.
  assert ckpts.exists()
  assert not (killed / "steps" / "01_conv2_1" / "finetuned").exists()
  assert not (killed / "model").exists()
  subprocess.run(
    _prune_cmd(killed, small_model, *extra), check=True, cwd=ROOT,
    capture_output=True, timeout=900,
  )  # fmt: skip
  jax.tree.map(
    np.testing.assert_array_equal,
    _final_variables(straight),
    _final_variables(killed),
  )


@pytest.mark.parametrize(
  "name",
  ["fmnist_vgg16_thinet", "fmnist_vgg16_thinet_gap", "fmnist_vgg16_thinet_tiny",
   "fmnist_resnet_thinet", "fmnist_vgg16_thinet_long"],
)  # fmt: skip
def test_runlocal_groups_exist_in_the_configs_model(name):
  """`:runlocal` prunes the first group of two stages of the config's own
  model (a VGG's names once broke the ResNet config)."""
  import importlib

  from train import common

  config = importlib.import_module(f"configs.{name}").get_config("runlocal")
  spec = presets.get(config.model)
  ratio = config.keep_ratio
  names = common.group_names(config, spec)
  plans = procedure.plan(
    spec, names, list(ratio) if isinstance(ratio, tuple) else ratio,
  )  # fmt: skip
  assert len(plans) == 2


@pytest.mark.parametrize(
  "config_name", ["fmnist_vgg16_thinet", "fmnist_vgg16_sweep"]
)
def test_runlocal_on_a_factory_takes_its_own_first_groups(config_name):
  """A factory's model under `:runlocal` prunes its own first two groups
  (the VGG preset's names were taken, and only worked where they matched)."""
  import importlib

  from thinet_jax import factories
  from train import common

  module = importlib.import_module(f"configs.{config_name}")
  config = module.get_config("runlocal")
  config.model = "tests.user_nets:nnx_cnn"
  net, _ = factories.build(config.model, 16, 1)
  got = common.group_names(config, net)
  assert got == [g.name for g in net.traced.groups][:2] == ["conv1", "conv2"]
  config.groups = ("conv2",)
  assert common.group_names(config, net) == ["conv2"]
  config.smoke_groups = 0
  config.groups = ()
  assert common.group_names(config, net) == [g.name for g in net.traced.groups]


def test_a_users_own_normalization_reaches_the_data():
  """config.normalization (mean, std) overrides the preprocessing's: the
  images the commands read are (pixel / 255 - mean) / std."""
  from absl import app

  from thinet_jax import data
  from train import common

  config = default.get_config()
  plain = next(iter(data.dataset(
    "fashion_mnist", "test", batch_size=4, image_size=28, train=False,
    **common.input_kwargs(config),
  )))["image"]  # fmt: skip
  config.normalization = ((0.5,), (0.25,))
  common.validate_training(config)
  own = next(iter(data.dataset(
    "fashion_mnist", "test", batch_size=4, image_size=28, train=False,
    **common.input_kwargs(config),
  )))["image"]  # fmt: skip
  mean, std = data.NORMALIZATION["fashion_mnist"]
  pixels = np.asarray(plain) * std[0] + mean[0]  # back to [0, 1]
  np.testing.assert_allclose(own, (pixels - 0.5) / 0.25, atol=1e-4)
  for bad in (((0.5,), (0.0,)), ((0.5, 0.5), (0.25,)), (0.5,)):
    config.normalization = bad
    with pytest.raises(app.UsageError, match="config.normalization"):
      common.validate_training(config)
