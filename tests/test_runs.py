"""Runs a user can trust: resumes that check their config, reruns that
finish, one process per workdir, errors before work (train.prune and
train.main at runlocal size, and the `rundir` mechanisms underneath)."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from thinet_jax import presets, rundir, train

from conftest import kill_at_first_checkpoint, random_variables

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _prune(workdir, model, *extra, timeout=900):
  return subprocess.run(
    [sys.executable, "-m", "train.prune",
     "--config=configs/fmnist_vgg16_thinet.py:runlocal",
     f"--workdir={workdir}", f"--config.init_checkpoint={model}", *extra],
    capture_output=True, text=True, cwd=ROOT, timeout=timeout,
  )  # fmt: skip


def _tree(workdir):
  """Every file under a workdir with its size and mtime: what a refused
  rerun must leave as it was."""
  return {
    str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
    for p in pathlib.Path(workdir).rglob("*")
    if p.is_file() and p.name != ".lock"
  }


def _variables(directory):
  return train.load_model(str(directory))[1]


def _same_model(a, b):
  jax.tree.map(np.testing.assert_array_equal, _variables(a), _variables(b))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_model):
  """One finished runlocal train.prune (two groups, fine-tunes, final)."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  result = _prune(workdir, small_model)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, small_model, result


@pytest.mark.slow
def test_progress_is_one_line_per_group_and_log_friendly(finished):
  """Output that is not a terminal: no carriage-return redraws, a line per
  group as it finishes (i/n, widths, accuracies, elapsed), totals on the
  statistics bars, no line printed twice in a row."""
  _, _, result = finished
  assert "\r" not in result.stderr
  assert "group 1/2 conv1_1 done: 16 -> 8 channels" in result.stdout
  assert "group 2/2 conv2_1 done: 32 -> 16 channels" in result.stdout
  assert "elapsed" in result.stdout and "groups ETA" in result.stdout
  stats_lines = [
    ln for ln in result.stderr.splitlines() if ln.startswith("statistics")
  ]
  assert stats_lines and all("/" in ln for ln in stats_lines), stats_lines
  lines = result.stderr.splitlines()
  assert all(a != b for a, b in zip(lines, lines[1:], strict=False)), lines


@pytest.mark.slow
def test_rerun_of_a_finished_run_prints_its_result(finished):
  workdir, model, first = finished
  before = _tree(workdir)
  again = _prune(workdir, model)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "holds a finished run" in again.stdout
  final_line = first.stdout.strip().splitlines()[-1]
  assert final_line in again.stdout
  assert "baseline vgg16-fmnist:" not in again.stdout  # No evaluation.
  changed = {k for k in before if _tree(workdir).get(k) != before[k]}
  assert changed <= {"wall_time.json"}, changed


@pytest.mark.slow
@pytest.mark.parametrize(
  "flag,field",
  [
    ("--config.keep_ratio=0.25", "plans[0].keep_ratio: 0.5 -> 0.25"),
    ("--config.criterion=thinet", "criterion: 'forward_centred' -> 'thinet'"),
    ("--config.seed=1", "seed: 0 -> 1"),
    ("init_checkpoint", "start_model_sha256"),
  ],
)  # fmt: skip
def test_config_change_on_resume_stops_before_any_work(
  finished, tmp_path, flag, field
):
  """Each of these changed what the steps in the workdir would be: the
  rerun stops, names the field and the ways on, and changes nothing."""
  workdir, model, _ = finished
  if flag == "init_checkpoint":  # Another model of the same architecture.
    other = tmp_path / "other"
    spec = presets.get("vgg16-fmnist")
    train.save_model(str(other), spec, random_variables(spec, 32, seed=1), 32)
    model = other
    extra = ()
  else:
    extra = (flag,)
  before = _tree(workdir)
  result = _prune(workdir, model, *extra)
  assert result.returncode == 2, result.stderr[-3000:]
  error = result.stderr.strip().splitlines()
  assert len(error) == 1, result.stderr  # One line, no traceback.
  assert field in error[0] and "step 'conv1_1'" in error[0]
  assert "--config.restart_from=conv1_1" in error[0]
  assert "new --workdir" in error[0]
  assert "baseline vgg16-fmnist:" not in result.stdout
  assert _tree(workdir) == before


@pytest.mark.slow
def test_a_one_shot_pass_is_reused_under_other_fine_tune_settings(
  finished, small_model, tmp_path
):
  """With no fine-tune between groups, the steps do not depend on the
  fine-tune's fields: a run with other ones resumes the pass (its steps
  copied into a new workdir) and only fine-tunes. Where the groups do
  fine-tune (`finished`), the same field stops the rerun."""
  one_shot = ("--config.finetune_epochs=0", "--config.stage_end_epochs=0")
  first = _prune(tmp_path / "a", small_model, *one_shot)
  assert first.returncode == 0, first.stderr[-3000:]
  shutil.copytree(tmp_path / "a" / "steps", tmp_path / "b" / "steps")
  other = ("--config.distill_weight=0.9", "--config.crop_pad=2",
           "--config.momentum=0.8", "--config.decay_all=True")  # fmt: skip
  second = _prune(tmp_path / "b", small_model, *one_shot, *other)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "group 1/2 conv1_1 resumed" in second.stdout
  assert "group 2/2 conv2_1 resumed" in second.stdout
  report = json.loads((tmp_path / "b" / "report.json").read_text())
  assert report["config"]["distill_weight"] == 0.9
  workdir, model, _ = finished
  refused = _prune(workdir, model, "--config.distill_weight=0.9")
  assert refused.returncode == 2
  assert "distill_weight: 0.5 -> 0.9" in refused.stderr


@pytest.mark.slow
def test_restart_from_redoes_that_step_and_the_rest(finished, tmp_path):
  """A per-group keep ratio from the command line (a tuple) changes only
  conv2_1's plan: the rerun names conv2_1, and restart_from=conv2_1
  redoes it (and the final fine-tune) while conv1_1 is reused as is. The
  report then counts the wall time of both invocations."""
  workdir, model, _ = finished
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  ratios = "--config.keep_ratio=(0.5,0.25)"
  refused = _prune(copy, model, ratios)
  assert refused.returncode == 2
  assert "step 'conv2_1'" in refused.stderr
  assert "plans[1].keep_ratio: 0.5 -> 0.25" in refused.stderr
  first_step = copy / "steps" / "00_conv1_1"
  kept = _tree(first_step)
  redone = _prune(copy, model, ratios, "--config.restart_from=conv2_1")
  assert redone.returncode == 0, redone.stderr[-3000:]
  assert "group 1/2 conv1_1 resumed" in redone.stdout
  assert _tree(first_step) == kept  # Reused, not recomputed.
  report = json.loads((copy / "report.json").read_text())
  assert [s["width_after"] for s in report["steps"]] == [8, 8]
  assert report["config"]["keep_ratio"] == [0.5, 0.25]
  spec, _, _ = train.load_model(str(copy / "model"))
  assert spec.layers[0] == 8 and spec.layers[3] == 8
  wall = report["wall"]
  assert wall["invocations"] >= 2 and wall["total_s"] > wall["last_s"]
  assert "invocations" in (copy / "report.md").read_text()


@pytest.mark.slow
def test_a_kill_between_the_model_and_the_report_is_completed(
  finished, tmp_path
):
  """The state a kill after `model/` was saved and before the report was
  written leaves (each write is atomic, so nothing else is possible): the
  same command writes the report and keeps the same model."""
  workdir, model, _ = finished
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  for name in ("report.json", "report.md", "accuracy.png", "widths.png"):
    (copy / name).unlink()
  result = _prune(copy, model)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("report.json", "report.md", "accuracy.png", "widths.png"):
    assert (copy / name).exists(), name
  _same_model(workdir / "model", copy / "model")
  a = json.loads((workdir / "report.json").read_text())
  b = json.loads((copy / "report.json").read_text())
  assert a["pruned"]["accuracy"] == b["pruned"]["accuracy"]


@pytest.mark.slow
def test_a_kill_during_the_head_fine_tune_resumes(small_model, tmp_path):
  """ThiNet-GAP: killed while the new head was being fine-tuned, the same
  command finishes with the head and the groups."""
  workdir = tmp_path / "run"
  extra = ("--config.head=gap", "--config.head_finetune_epochs=6")
  cmd = [
    sys.executable, "-m", "train.prune",
    "--config=configs/fmnist_vgg16_thinet.py:runlocal",
    f"--workdir={workdir}", f"--config.init_checkpoint={small_model}",
    *extra,
  ]  # fmt: skip
  ckpts = workdir / "head" / "finetune" / "checkpoints"
  kill_at_first_checkpoint(cmd, ckpts, ROOT)
  assert ckpts.exists() and not (workdir / "head" / "head.json").exists()
  result = _prune(workdir, small_model, *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((workdir / "report.json").read_text())
  assert report["head"]["head"] == "gap"
  assert [s["group"] for s in report["steps"]] == ["conv1_1", "conv2_1"]


_HOLDER = """
import sys, time
from thinet_jax import rundir
with rundir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def _hold_lock(workdir):
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLDER, str(workdir)], cwd=ROOT,
    stdout=subprocess.PIPE, text=True,
  )  # fmt: skip
  assert proc.stdout.readline().strip() == "locked"
  return proc


@pytest.mark.slow
def test_a_second_process_on_a_workdir_is_refused(small_model, tmp_path):
  holder = _hold_lock(tmp_path)
  try:
    result = _prune(tmp_path, small_model)
    assert result.returncode == 2
    assert f"is in use by pid {holder.pid} on" in result.stderr
    assert "another --workdir" in result.stderr
    assert not (tmp_path / "steps").exists()
  finally:
    holder.kill()
    holder.wait()


def test_a_dead_holders_lock_does_not_block(tmp_path):
  """The lock is the kernel's: it goes with the process that held it, even
  when killed with SIGKILL."""
  holder = _hold_lock(tmp_path)
  with pytest.raises(rundir.WorkdirLockedError, match=str(holder.pid)):
    with rundir.lock(str(tmp_path)):
      pass
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  with rundir.lock(str(tmp_path)):
    pass


@pytest.mark.slow
@pytest.mark.parametrize(
  "extra,message",
  [
    (("--config.keep_ratio=1.5",), "config.keep_ratio must be in (0, 1]"),
    (("--config.keep_ratio=(0.5,0.5,0.5)",), "3 keep ratios for 2 groups"),
    (("--config.criterion=l2",), "config.criterion='l2' is not a criterion"),
    (("--config.groups=('conv9_9',)",), "unknown groups ['conv9_9']"),
    (("--config.head=gap", "--config.keep_ratio=(0.5,)"),
     "1 keep ratios for 2 groups"),
    (("--config.budget=0.01",), "config.budget=0.01 is out of reach"),
    (("--config.keep_ratoi=0.3",),
     'no field \'keep_ratoi\'; did you mean "keep_ratio"?'),
    (("--config.target=best",), "config.target must be one of"),
    (("--config.distill_weight=2.0",), "config.distill_weight must be in"),
    (("--config.distill_features=-1.0",), "config.distill_features must be"),
    # nan passes every "< 0" check: it ended in "training diverged".
    (("--config.ridge=nan",), "config.ridge must be a finite number"),
    (("--config.learning_rate=nan",), "config.learning_rate must be a finite"),
    (("--config.momentum=inf",), "config.momentum must be a finite number"),
  ],
)  # fmt: skip
def test_bad_configs_fail_in_one_line_before_any_work(
  small_model, tmp_path, extra, message
):
  workdir = tmp_path / "run"
  result = _prune(workdir, small_model, *extra)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("train.prune: error: "), (
    result.stderr
  )
  assert message in lines[0]
  assert "baseline vgg16-fmnist:" not in result.stdout  # Nothing evaluated.
  assert not workdir.exists() or not any(workdir.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
  "extra,message",
  [
    (("--config.keep_ratios=()",), "config.keep_ratios must list"),
    (("--config.keep_ratios=(0.5,1.5)",), "config.keep_ratios: keep_ratio"),
    (("--config.criteria=('l2',)",), "'l2' is not a criterion"),
    (("--config.finetune_steps=-1",), "config.finetune_steps must be"),
    (("--config.groups=('conv9_9',)",), "no prunable group 'conv9_9'"),
    (("--config.ridge=nan",), "config.ridge must be a finite number"),
  ],
)  # fmt: skip
def test_bad_sweep_configs_fail_in_one_line_before_any_work(
  small_model, tmp_path, extra, message
):
  """train.sweep checked its fields late (an unknown criterion after the
  statistics) or never (finetune_steps=-1)."""
  result = subprocess.run(
    [sys.executable, "-m", "train.sweep",
     "--config=configs/fmnist_vgg16_sweep.py:runlocal",
     f"--workdir={tmp_path / 'run'}", f"--config.init_checkpoint={small_model}",
     *extra],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("train.sweep: error: ") and message in lines[-1]
  assert "statistics" not in result.stderr + result.stdout


@pytest.mark.slow
def test_an_unwritable_workdir_fails_before_any_work(small_model, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  result = _prune(blocker / "run", small_model)
  assert result.returncode == 2
  assert "cannot write to workdir" in result.stderr
  assert "baseline vgg16-fmnist:" not in result.stdout


@pytest.mark.slow
def test_nan_weights_are_named_at_load(tmp_path):
  """4 NaNs in conv3_1's kernel (not a pruned group): the command stops at
  load, naming the parameter, instead of reporting an accuracy."""
  spec = presets.get("vgg16-fmnist")
  variables = random_variables(spec, 32)
  kernel = np.array(variables["params"]["conv3_1"]["kernel"])
  kernel.reshape(-1)[:4] = np.nan
  variables["params"]["conv3_1"]["kernel"] = kernel
  model = tmp_path / "model"
  train.save_model(str(model), spec, variables, 32)
  result = _prune(tmp_path / "run", model)
  assert result.returncode == 2
  assert "parameter params/conv3_1/kernel has 4 NaN/inf" in result.stderr
  assert "accuracy" not in result.stdout


@pytest.mark.parametrize(
  "command", ["train.prune", "train.main", "train.sweep", "train.describe"]
)
def test_help_lists_every_flag_and_keeps_the_usage_lines(command):
  result = subprocess.run(
    [sys.executable, "-m", command, "--help"], capture_output=True,
    text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  for flag in ("--config", "--workdir", "--[no]traceback"):
    assert flag in result.stdout, flag
  source = (ROOT / "train" / f"{command.split('.')[1]}.py").read_text()
  usage = source.split('"""')[1].split("\n\n")[1]  # The launch command.
  assert usage.startswith("  python -m"), usage
  assert usage in result.stdout  # Continuation lines (\) and all.


# --- the mechanisms, in process ---------------------------------------------


def test_check_steps_names_the_first_differing_step(tmp_path):
  steps = [
    rundir.step_in(str(tmp_path / name), name, {"a": 1, "plan": [name]})
    for name in ("one", "two", "three")
  ]
  for s in steps[:2]:
    rundir.claim_step(s.fingerprint, s.determinants)
  rundir.check_steps(steps)  # Unchanged: resumes.
  changed = [steps[0], *[
    rundir.step_in(str(tmp_path / s.name), s.name, {"a": 2, "plan": [s.name]})
    for s in steps[1:]
  ]]  # fmt: skip
  with pytest.raises(rundir.ResumeMismatchError) as raised:
    rundir.check_steps(changed)
  assert "step 'two'" in str(raised.value) and "a: 1 -> 2" in str(raised.value)
  with pytest.raises(rundir.RunError, match="names no step"):
    rundir.check_steps(changed, restart_from="four")
  (tmp_path / "report.json").write_text("{}")
  rundir.check_steps(
    changed, restart_from="two", later=[str(tmp_path / "report.json")]
  )
  assert (tmp_path / "one").exists()
  assert not (tmp_path / "two").exists()
  assert not (tmp_path / "report.json").exists()
  with pytest.raises(rundir.ResumeMismatchError):  # claim_step checks too.
    rundir.claim_step(steps[0].fingerprint, {"a": 3})


def test_differences_recurse_into_dicts_and_lists():
  stored = {"x": 1, "plans": [{"r": 0.5}, {"r": 0.5}], "gone": 1}
  now = {"x": 1, "plans": [{"r": 0.5}, {"r": 0.25}], "new": 2}
  assert rundir.differences(stored, now) == [
    "gone: 1 -> (absent)",
    "new: (absent) -> 2",
    "plans[1].r: 0.5 -> 0.25",
  ]


def test_tree_hash_sees_every_value():
  a = {"params": {"w": np.arange(6.0).reshape(2, 3)}}
  b = {"params": {"w": np.arange(6.0).reshape(2, 3)}}
  assert rundir.tree_hash(a) == rundir.tree_hash(b)
  b["params"]["w"][1, 2] += 1e-7
  assert rundir.tree_hash(a) != rundir.tree_hash(b)
  assert rundir.tree_hash(a) != rundir.tree_hash(
    {"params": {"w": np.arange(6.0).reshape(3, 2)}}
  )


def test_replace_dir_swaps_whole_directories(tmp_path):
  target = tmp_path / "model"
  for value in ("old", "new"):
    tmp = rundir.temporary_dir(str(target))
    pathlib.Path(tmp, "file").write_text(value)
    rundir.replace_dir(tmp, str(target))
    assert (target / "file").read_text() == value
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replace_dir_never_deletes_what_it_did_not_write(tmp_path):
  """A user's folder or file at the destination is refused in one error
  and left as it was; an empty folder may be filled."""
  notes = tmp_path / "mine"
  notes.mkdir()
  (notes / "notes.txt").write_text("keep me")
  afile = tmp_path / "afile"
  afile.write_text("keep me too")
  for where, phrase in ((notes, "did not write"), (afile, "not a directory")):
    with pytest.raises(rundir.RunError, match=phrase):
      rundir.temporary_dir(str(where))
    tmp = rundir.temporary_dir(str(tmp_path / "elsewhere"))
    with pytest.raises(rundir.RunError, match=phrase):
      rundir.replace_dir(tmp, str(where))
    shutil.rmtree(tmp)
  assert (notes / "notes.txt").read_text() == "keep me"
  assert os.listdir(notes) == ["notes.txt"]
  assert afile.read_text() == "keep me too"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]
  (tmp_path / "empty").mkdir()
  rundir.replace_dir(
    rundir.temporary_dir(str(tmp_path / "empty")), str(tmp_path / "empty")
  )
  assert os.listdir(tmp_path / "empty") == [rundir.MARKER]


def test_leftovers_of_a_killed_swap_are_removed(tmp_path):
  """A process killed while building or swapping leaves `<dir>.tmp<pid>`
  or `<dir>.old<pid>`; the next save of that path removes them (a live
  process's temporary stays, a user's look-alike without the marker
  too)."""
  target = tmp_path / "model"
  child = subprocess.Popen(["true"])
  child.wait()  # a pid that is gone
  for kind in ("tmp", "old"):
    left = tmp_path / f"model.{kind}{child.pid}"
    left.mkdir()
    (left / rundir.MARKER).write_text("")
  live = tmp_path / f"model.tmp{os.getppid()}"
  live.mkdir()
  (live / rundir.MARKER).write_text("")
  users = tmp_path / f"model.old{child.pid + 1}"
  users.mkdir()
  tmp = rundir.temporary_dir(str(target))
  rundir.replace_dir(tmp, str(target))
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
    ["model", live.name, users.name]
  )


def test_wall_clock_adds_up_invocations(tmp_path):
  first = rundir.WallClock(str(tmp_path))
  time.sleep(0.05)
  one = first.tick()
  second = rundir.WallClock(str(tmp_path))
  time.sleep(0.02)
  two = second.tick()
  assert two["invocations"] == 2
  assert two["total_s"] == pytest.approx(one["total_s"] + two["last_s"])
  assert two["total_s"] > two["last_s"]


def _synthetic_report():
  config = {
    "model": "vgg16-fmnist", "dataset": "fashion_mnist",
    "criterion": "forward_centred", "least_squares": True, "ridge": 0.0,
    "centred": True, "target": "original", "bn_batches": 8,
    "distill_weight": 0.5, "finetune_epochs": 0.1, "num_epochs": 1.0,
    "keep_ratio": 0.5, "seed": 0,
  }  # fmt: skip
  step = {
    "group": "conv1_1", "width_before": 16, "width_after": 8,
    "params_after": 10, "flops_after": 100, "relative_error": 0.1,
    "accuracy_pruned": 0.8, "accuracy_finetuned": 0.9,
  }  # fmt: skip
  return {
    "config": config,
    "baseline": {"accuracy": 0.93, "params": 20, "flops": 200},
    "pruned": {"accuracy": 0.92, "params": 10, "flops": 100,
               "accuracy_before_final_finetune": 0.9},
    "steps": [step, {**step, "group": "conv2_1"}],
    "widths": [{"group": "conv1_1", "original": 16, "kept": 8}],
    "flops_reduction": 2.0, "params_reduction": 2.0,
    "accuracy_change": -0.01, "wall_s": 600.0,
    "wall": {"total_s": 600.0, "last_s": 60.0, "invocations": 3},
  }  # fmt: skip


def test_report_lists_every_setting_and_the_plot_has_a_legend(tmp_path):
  from thinet_jax import report

  result = _synthetic_report()
  report.write(str(tmp_path), result)
  text = (tmp_path / "report.md").read_text()
  for field in result["config"]:
    if field not in ("model", "dataset"):
      assert f"(`{field}`) | {result['config'][field]!r} |" in text, field
  assert "10.0 min over 3 invocations (the last 1.0 min)" in text
  fig = report.accuracy_figure(result)
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert labels == [
    "right after pruning", "after the group's fine-tune",
    "after the final fine-tune", "unpruned baseline",
  ]  # fmt: skip
  faces = {
    str(line.get_markerfacecolor())
    for line in fig.axes[0].get_lines()
    if line.get_label() in labels[:2]
  }
  assert len(faces) == 2  # Hollow after pruning, filled after fine-tuning.


def test_report_leaves_a_group_without_fine_tune_empty_and_lists_notes(
  tmp_path,
):
  """A group with no fine-tune of its own has no fine-tuned accuracy (the
  column once repeated the pruned one); the notes say what the run did
  not do as configured."""
  from thinet_jax import report

  result = _synthetic_report()
  result["steps"][1] = {**result["steps"][1], "accuracy_finetuned": None}
  result["notes"] = ["feature-map distillation off: no named maps"]
  report.write(str(tmp_path), result)
  text = (tmp_path / "report.md").read_text()
  assert "| conv1_1 | 16 -> 8 | 10 | 100 | 0.1000 | 0.8000 | 0.9000 |" in text
  assert "| conv2_1 | 16 -> 8 | 10 | 100 | 0.1000 | 0.8000 |  |" in text
  assert "- feature-map distillation off: no named maps" in text
  fig = report.accuracy_figure(result)
  tuned = [
    line for line in fig.axes[0].get_lines()
    if line.get_label() == "after the group's fine-tune"
  ]  # fmt: skip
  assert list(tuned[0].get_xdata()) == [1]
