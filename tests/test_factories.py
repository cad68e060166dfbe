"""Any Flax model in the commands: factories, the Net they build, its
checkpoints, counts and pruning, and train.prune end to end on a Linen
and an NNX factory (runlocal)."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import user_nets
from thinet_jax import depgraph, factories, train

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINEN = "tests.user_nets:linen_cnn"
NNX = "tests.user_nets:nnx_cnn"


class ValidNet(nn.Module):
  """No padding, no bias, no nonlinearity: XLA's FLOP count is then
  exactly the multiply-adds (its CPU count skips padded taps)."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(6, (3, 3), padding="VALID", use_bias=False, name="a")(x)
    x = nn.Conv(5, (3, 3), padding="VALID", use_bias=False, name="b")(x)
    return nn.Dense(4, use_bias=False, name="head")(x.reshape(len(x), -1))


def valid_net():
  return ValidNet()


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def _random(variables, seed=0):
  """Every leaf drawn at random; BatchNorm variances positive."""
  rng = np.random.default_rng(seed)

  def draw(path, a):
    x = rng.normal(size=a.shape) * 0.3 + 0.5
    if "var" in jax.tree_util.keystr(path):
      x = np.abs(x) + 0.1
    return jnp.asarray(x, a.dtype)

  return jax.tree_util.tree_map_with_path(draw, variables)


def test_flops_from_the_traced_program_equal_xla_cost_analysis():
  net, variables = factories.build("tests.test_factories:valid_net", 9, 2)
  x = jnp.ones((1, 9, 9, 2))
  variables = _random(variables)
  counted = factories.count(net, 9)
  assert counted["flops"] == _xla_flops(net.infer, variables, x)
  assert counted["params"] == 3 * 3 * 2 * 6 + 3 * 3 * 6 * 5 + 5 * 5 * 5 * 4
  group = net.traced.group("a")
  traced, small = depgraph.prune(net.traced, variables, group, [0, 2, 3])
  pruned = factories.pruned(net, traced)
  after = factories.count(pruned, 9)
  assert after["flops"] == _xla_flops(pruned.infer, small, x)
  assert after["params"] == 3 * 3 * 2 * 3 + 3 * 3 * 3 * 5 + 5 * 5 * 5 * 4


@pytest.mark.parametrize("factory", [LINEN, NNX])
def test_pruned_net_rebuilds_from_its_metadata(factory):
  """A model directory stores the factory and the kept masks: the rebuilt
  Net has the same shapes and logits, and its training function runs on
  the pruned variables and returns pruned BatchNorm statistics."""
  net, variables = factories.build(factory, 16, 1)
  variables = _random(variables)
  group = net.traced.groups[0]
  keep = np.arange(0, net.traced.width(group), 2)
  traced, small = depgraph.prune(net.traced, variables, group, keep)
  pruned = factories.pruned(net, traced)
  again = factories.rebuild(json.loads(json.dumps(pruned.meta)))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16, 16, 1)))
  np.testing.assert_allclose(
    again.infer(small, x), pruned.infer(small, x), rtol=1e-6, atol=1e-6
  )
  assert jax.tree.map(lambda s: s.shape, again.abstract(16)) == jax.tree.map(
    jnp.shape, small
  )
  logits, stats = jax.jit(again.train)(small, x, jax.random.key(0))
  assert logits.shape == (3, 10)
  assert jax.tree.map(jnp.shape, stats) == jax.tree.map(
    jnp.shape, small["batch_stats"]
  )


def test_batch_norm_reestimation_measures_each_layers_momentum():
  """A factory's BatchNorm momentum is unknown: re-estimation measures
  1 - m per layer; the result equals the one from the known rate."""
  net, variables = factories.build(LINEN, 16, 1)
  variables = _random(variables)
  rng = np.random.default_rng(2)
  batches = [
    {"image": rng.normal(size=(4, 16, 16, 1)).astype(np.float32)}
    for _ in range(2)
  ]
  measured = train.reestimate_batch_norm(net, variables, batches)
  import dataclasses

  known = dataclasses.replace(net, bn_rate=0.1)  # LinenCNN's momentum 0.9
  exact = train.reestimate_batch_norm(known, variables, batches)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5),
    measured["batch_stats"], exact["batch_stats"],
  )  # fmt: skip
  assert not np.allclose(
    measured["batch_stats"]["bn1"]["mean"],
    variables["batch_stats"]["bn1"]["mean"],
  )


@pytest.mark.parametrize("fmt", ["msgpack", "safetensors", "orbax"])
def test_variables_read_from_checkpoints(tmp_path, fmt):
  net, variables = factories.build(NNX, 16, 1)
  variables = _random(variables, seed=3)
  if fmt == "msgpack":
    path = tmp_path / "v.msgpack"
    path.write_bytes(flax.serialization.to_bytes(variables))
  elif fmt == "safetensors":
    from safetensors.numpy import save_file

    path = tmp_path / "v.safetensors"
    flat = flax.traverse_util.flatten_dict(variables, sep="/")
    save_file({k: np.asarray(v) for k, v in flat.items()}, str(path))
  else:
    import orbax.checkpoint as ocp

    path = tmp_path / "orbax"
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(path, variables)
  fresh, like = factories.build(NNX, 16, 1)
  got = factories.read_variables(str(path), like)
  jax.tree.map(np.testing.assert_array_equal, got, variables)


def _save(variables, path):
  if path.suffix == ".msgpack":
    path.write_bytes(flax.serialization.to_bytes(variables))
  else:
    from safetensors.numpy import save_file

    flat = flax.traverse_util.flatten_dict(variables, sep="/")
    save_file({k: np.asarray(v) for k, v in flat.items()}, str(path))


@pytest.mark.parametrize("fmt", ["msgpack", "safetensors"])
def test_a_start_checkpoint_with_nan_is_refused_naming_the_leaf(tmp_path, fmt):
  """Under jit relu(NaN) is 0, so logits cannot reveal NaN weights: the
  variables are checked where they are read."""
  _, variables = factories.build(LINEN, 16, 1)
  variables = jax.tree.map(np.array, variables)
  variables["params"]["block_conv1"]["kernel"][0, 0, 0, 3] = np.nan
  path = tmp_path / f"v.{fmt}"
  _save(variables, path)
  with pytest.raises(FloatingPointError, match="params/block_conv1/kernel"):
    factories.read_variables(str(path), variables)


def test_unreadable_checkpoints_name_the_file(tmp_path):
  _, variables = factories.build(LINEN, 16, 1)
  good = tmp_path / "good.msgpack"
  _save(variables, good)
  (tmp_path / "cut.msgpack").write_bytes(good.read_bytes()[:100])
  (tmp_path / "empty.msgpack").write_bytes(b"")
  (tmp_path / "empty.safetensors").write_bytes(b"")
  (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00" + b"x" * 30)
  (tmp_path / "emptydir").mkdir()
  for name in ("cut.msgpack", "empty.msgpack", "empty.safetensors",
               "junk.safetensors", "emptydir"):  # fmt: skip
    with pytest.raises(ValueError, match="cannot be read as") as e:
      factories.read_variables(str(tmp_path / name), variables)
    assert name in str(e.value)


def test_variables_the_model_lacks_are_named(tmp_path):
  _, variables = factories.build(LINEN, 16, 1)
  more = {**variables, "params": {**variables["params"], "old": {"w": 1.0}}}
  _save(jax.tree.map(np.asarray, more), tmp_path / "v.msgpack")
  with pytest.warns(UserWarning, match="first: params/old/w"):
    got = factories.read_variables(str(tmp_path / "v.msgpack"), variables)
  jax.tree.map(np.testing.assert_array_equal, got, variables)


def test_train_main_refuses_a_nan_start_in_one_line(tmp_path):
  _, variables = factories.build(LINEN, 32, 1)
  variables = jax.tree.map(np.array, variables)
  variables["params"]["head"]["bias"][:] = np.inf
  _save(variables, tmp_path / "v.msgpack")
  proc = subprocess.run(
    [sys.executable, "-m", "train.main",
     "--config=configs/fmnist_vgg16.py:runlocal",
     f"--workdir={tmp_path / 'run'}", f"--config.model={LINEN}",
     f"--config.init_checkpoint={tmp_path / 'v.msgpack'}"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("train.main: error: "), proc.stderr[-2000:]
  assert "params/head/bias" in lines[-1] and "Traceback" not in proc.stderr


def test_checkpoint_of_another_model_is_refused(tmp_path):
  _, variables = factories.build(LINEN, 16, 1)
  path = tmp_path / "v.msgpack"
  path.write_bytes(flax.serialization.to_bytes(variables))
  _, like = factories.build(NNX, 16, 1)
  with pytest.raises(ValueError, match="lacks .* of the model's variables"):
    factories.read_variables(str(path), like)


@pytest.mark.slow
def test_train_sweep_on_a_factory(tmp_path):
  """train.sweep on the NNX factory's two groups: one line per criterion
  and the allocated line, each row's counts and FLOPs those of the pruned
  shapes, the allocated rows within the uniform rows' FLOPs, every
  variant also fine-tuned (the vmapped masked fine-tune)."""
  _, variables = factories.build(NNX, 32, 1)
  path = tmp_path / "nnx.msgpack"
  path.write_bytes(flax.serialization.to_bytes(_random(variables)))
  common = (
    f"--config.model={NNX}", f"--config.init_checkpoint={path}",
    "--config.groups=('conv1','conv2')",
  )  # fmt: skip
  _command("sweep", tmp_path / "sweep", *common,
           config="configs/fmnist_vgg16_sweep.py")  # fmt: skip
  out = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
  assert list(out["lines"]) == [
    "thinet", "weight_sum", "apoz", "random", "thinet-allocated"
  ]  # fmt: skip
  net, _ = factories.build(NNX, 32, 1)
  widths = {g.name: g.width for g in net.traced.groups}
  for label, rows in out["lines"].items():
    assert len(rows) == len(out["ratios"])
    for row, ratio in zip(rows, out["ratios"], strict=True):
      m = net.traced
      for g, n in row["counts"].items():
        if label != "thinet-allocated":
          assert n == max(1, int(widths[g] * ratio))
        m = depgraph.surgery.prune_shapes(m, m.group(g), np.arange(n))
      x = jax.ShapeDtypeStruct((1, 32, 32, 1), np.float32)
      assert row["flops"] == depgraph.count(m, x)["flops"]
      assert 0 <= row["accuracy"] <= 1
      assert 0 <= row["accuracy_finetuned"] <= 1  # runlocal: 2 steps
  for a, u in zip(out["lines"]["thinet-allocated"], out["lines"]["thinet"],
                  strict=True):  # fmt: skip
    assert a["flops"] <= u["flops"]


def _prune_nnx(tmp_path, *extra):
  """train.prune on the NNX factory's conv1 and conv2, from random
  variables in a flax msgpack file; returns the workdir."""
  _, variables = factories.build(NNX, 32, 1)
  path = tmp_path / "nnx.msgpack"
  path.write_bytes(flax.serialization.to_bytes(_random(variables)))
  prune_dir = tmp_path / "prune"
  _command(
    "prune", prune_dir, f"--config.model={NNX}",
    f"--config.init_checkpoint={path}", "--config.groups=('conv1','conv2')",
    *extra,
  )  # fmt: skip
  return prune_dir


@pytest.mark.slow
def test_train_prune_to_a_flops_budget_on_a_factory(tmp_path):
  """--config.budget on an NNX factory: the allocation's counts are the
  widths pruned, the FLOPs meet the budget, and the first step (the same
  statistics, keys and options as its error curve) reports the error the
  allocation predicted for it."""
  prune_dir = _prune_nnx(tmp_path, "--config.budget=0.6")
  report = json.loads((prune_dir / "report.json").read_text())
  allocation = report["allocation"]
  kept = {s["group"]: s["width_after"] for s in report["steps"]}
  assert kept == allocation["counts"]
  assert report["pruned"]["flops"] <= 0.6 * report["baseline"]["flops"]
  first = report["steps"][0]
  predicted = allocation["predicted_errors"][first["group"]]
  assert first["relative_error"] == pytest.approx(predicted, abs=2e-4)


EDITED = "tests.user_nets:edited_cnn"


def test_a_models_identity_is_its_traced_program(monkeypatch):
  """The program digest is the same for two builds of one code, and
  differs when the factory's code changes the computation but not a
  single parameter (ReLU -> GELU) or a width."""

  def digest():
    return factories.program_digest(factories.build(EDITED, 16, 1)[0], 16)

  relu = digest()
  assert digest() == relu
  monkeypatch.setenv("THINET_TEST_ACTIVATION", "gelu")
  gelu = digest()
  monkeypatch.setenv("THINET_TEST_WIDTH", "6")
  assert len({relu, gelu, digest()}) == 3


def test_a_model_directory_of_an_edited_factory_says_so(tmp_path, monkeypatch):
  """A model directory whose factory now builds another width: one error
  naming the factory and the leaf, not 'corrupt or truncated'."""
  net, variables = factories.build(EDITED, 16, 1)
  train.save_model(str(tmp_path / "model"), net, variables, 16)
  monkeypatch.setenv("THINET_TEST_WIDTH", "6")
  with pytest.raises(ValueError, match="does not fit the model that") as e:
    train.load_model(str(tmp_path / "model"))
  assert "tests.user_nets:edited_cnn" in str(e.value)
  assert "is stored as" in str(e.value) and "corrupt" not in str(e.value)


@pytest.mark.slow
def test_a_resume_under_edited_model_code_stops_before_any_work(tmp_path):
  """train.prune finished under ReLU, run again after the factory was
  edited to GELU (same parameters): it stops before any work, naming the
  change and the two ways on; under ReLU again it prints its result."""
  _, variables = factories.build(EDITED, 32, 1)
  path = tmp_path / "start.msgpack"
  path.write_bytes(flax.serialization.to_bytes(_random(variables)))
  args = (
    f"--config.model={EDITED}", f"--config.init_checkpoint={path}",
    "--config.groups=('stem',)", "--config.keep_ratio=0.5",
  )  # fmt: skip
  _command("prune", tmp_path / "prune", *args)
  env = {**os.environ, "THINET_TEST_ACTIVATION": "gelu"}
  proc = subprocess.run(
    [sys.executable, "-m", "train.prune",
     "--config=configs/fmnist_vgg16_thinet.py:runlocal",
     f"--workdir={tmp_path / 'prune'}", *args],
    capture_output=True, text=True, cwd=ROOT, timeout=900, env=env,
  )  # fmt: skip
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "the model's computation changed" in proc.stderr
  assert "--config.restart_from=start" in proc.stderr
  assert "baseline" not in proc.stdout  # no work: not even the evaluation
  again = _command("prune", tmp_path / "prune", *args)
  assert "holds a finished run" in again.stdout


def test_describe_any_model(tmp_path):
  """describe on a factory's Net (it raised AttributeError: no 'family'):
  totals equal the model's count, every consumer of every group is
  reported, and a consumer's zero fraction equals the fraction of zeros
  of its input computed with Flax itself (block_conv2 reads
  relu(bn1(block_conv1(...))))."""
  from thinet_jax import describe

  net, variables = factories.build(LINEN, 16, 1)
  variables = _random(variables, seed=1)
  variables["params"]["bn1"]["bias"] = variables["params"]["bn1"]["bias"] - 1
  rng = np.random.default_rng(0)
  batches = [
    {"image": rng.normal(size=(4, 16, 16, 1)).astype(np.float32),
     "label": rng.integers(0, 10, 4)} for _ in range(2)
  ]  # fmt: skip
  report = describe.describe(net, variables, batches, 16)
  assert {k: report[k] for k in ("params", "flops")} == factories.count(net, 16)
  names = {c.name for g in net.traced.groups for c in g.consumers}
  assert set(report["consumers"]) == names
  module = user_nets.linen_cnn()
  zeros = []
  for b in batches:
    _, state = module.apply(
      variables, b["image"], capture_intermediates=True,
      mutable=["intermediates"],
    )  # fmt: skip
    bn1 = np.asarray(state["intermediates"]["bn1"]["__call__"][0])
    zeros.append((np.maximum(bn1, 0) == 0).mean(axis=(1, 2, 3)))
  got = report["consumers"]["block_conv2"]
  assert got["zero_fraction"] == pytest.approx(np.concatenate(zeros).mean())
  assert got["input_shape"] == [4, 8, 8, 12]
  assert 0 < got["zero_fraction"] < 1


BROKEN = {
  "syntax_error": ("def make(:\n  pass\n", "syntax error"),
  "raises_on_import": ("raise RuntimeError('no GPU here')\n", "no GPU here"),
  "raises_when_called": (
    "def make():\n  raise KeyError('width')\n",
    "raised KeyError",
  ),
  "fails_on_input": (
    "import flax.linen as nn\n"
    "class M(nn.Module):\n"
    "  @nn.compact\n"
    "  def __call__(self, x):\n"
    "    return nn.Dense(3)(x.reshape(7, -1))\n"
    "def make():\n  return M()\n",
    r"failed on a \[1, 16, 16, 1\] input",
  ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_factory_is_one_error_naming_it(tmp_path, monkeypatch, case):
  source, phrase = BROKEN[case]
  (tmp_path / f"broken_{case}.py").write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(factories.FactoryError, match=phrase) as e:
    factories.build(f"broken_{case}:make", 16, 1)
  assert f"broken_{case}" in str(e.value)


def test_bad_factory_paths_name_the_problem():
  with pytest.raises(factories.FactoryError, match="package.module:function"):
    factories.resolve("nocolon:")
  with pytest.raises(factories.FactoryError, match="cannot import"):
    factories.resolve("no_such_pkg.x:f")
  with pytest.raises(factories.FactoryError, match="has no"):
    factories.resolve("tests.user_nets:missing")


def _command(name, workdir, *extra, config="configs/fmnist_vgg16_thinet.py"):
  proc = subprocess.run(
    [sys.executable, "-m", f"train.{name}", f"--config={config}:runlocal",
     f"--workdir={workdir}", *extra],
    capture_output=True, text=True, cwd=ROOT, timeout=900,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _check_pruned(workdir, groups):
  report = json.loads((workdir / "report.json").read_text())
  widths = {w["group"]: w for w in report["widths"]}
  for g in groups:
    assert widths[g]["kept"] == widths[g]["original"] // 2
  net, variables, _ = train.load_model(str(workdir / "model"))
  assert report["pruned"]["flops"] == factories.count(net, 32)["flops"]
  assert report["pruned"]["flops"] < report["baseline"]["flops"]
  return report, net, variables


@pytest.mark.slow
def test_train_prune_on_a_linen_factory_end_to_end(tmp_path):
  """train.main trains the user's Linen model, train.prune prunes two of
  its groups (one the residual stream), the pruned model directory loads
  and exports with jax.export, giving the same logits."""
  _command("main", tmp_path / "train", f"--config.model={LINEN}",
           config="configs/fmnist_vgg16.py")  # fmt: skip
  prune_dir = tmp_path / "prune"
  proc = _command(
    "prune", prune_dir, f"--config.model={LINEN}",
    f"--config.init_checkpoint={tmp_path / 'train' / 'model'}",
    "--config.groups=('stem','block_conv1')",
  )  # fmt: skip
  # A factory's model does not name its feature maps: the default's
  # feature-map distillation is switched off, and says so.
  assert "feature-map distillation off" in proc.stdout
  report = json.loads((prune_dir / "report.json").read_text())
  assert report["config"]["distill_features"] == 0.0
  assert "feature-map distillation off" in report["notes"][0]
  assert "feature-map distillation off" in (prune_dir / "report.md").read_text()
  _, net, variables = _check_pruned(prune_dir, ("stem", "block_conv1"))
  assert variables["params"]["stem"]["kernel"].shape[-1] == 4
  assert variables["params"]["block_conv2"]["kernel"].shape[-1] == 4
  from thinet_jax import export

  blob = export.export_model(net, variables, image_size=32, batch=3)
  x = np.random.default_rng(0).normal(size=(3, 32, 32, 1)).astype(np.float32)
  np.testing.assert_allclose(
    export.load(blob)(x), net.infer(variables, x), rtol=1e-5, atol=1e-5
  )
  import onnxruntime

  from thinet_jax import onnx_export

  proto = onnx_export.to_onnx(net, variables, 32, input_layout="nhwc")
  session = onnxruntime.InferenceSession(
    proto.SerializeToString(), providers=["CPUExecutionProvider"]
  )
  np.testing.assert_allclose(
    session.run(None, {"images": x})[0], net.infer(variables, x),
    rtol=1e-4, atol=1e-4,
  )  # fmt: skip


@pytest.mark.slow
def test_train_prune_on_an_nnx_factory_from_msgpack(tmp_path):
  prune_dir = _prune_nnx(tmp_path)
  _, _, small = _check_pruned(prune_dir, ("conv1", "conv2"))
  assert small["params"]["conv2"]["kernel"].shape == (3, 3, 4, 8)
