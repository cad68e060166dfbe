"""Every benchmark script runs in its quick mode, so none can rot."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every benchmark runs as a subprocess: the full tier only.
pytestmark = pytest.mark.slow


def _quick(script, tmp_path, *extra):
  """Runs `benchmarks/<script> --quick` and returns the JSON it wrote."""
  out = tmp_path / "out.json"
  result = subprocess.run(
    [sys.executable, f"benchmarks/{script}", "--quick", f"--out={out}",
     *extra],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(out.read_text())


def test_greedy_speed_quick(tmp_path):
  report = _quick("greedy_speed.py", tmp_path)
  assert [r["channels"] for r in report["rows"]] == [16, 32]
  assert all(r["same_kept_set"] for r in report["rows"])
  assert all(r["max_scale_diff"] < 1e-3 for r in report["rows"])


def test_depgraph_speed_quick(tmp_path):
  rows = {r["model"]: r for r in _quick("depgraph_speed.py", tmp_path)["rows"]}
  assert rows["vgg16"]["groups"] == 15  # 13 convs, fc6, fc7
  assert rows["resnet50"]["groups"] == 37  # 32 + stem + 4 stages
  assert rows["torch resnet50"]["groups"] == 38  # also its classifier's
  assert all(r["best_s"] > 0 for r in rows.values())


def test_depgraph_zoo_quick(tmp_path):
  rows = _quick("depgraph_zoo.py", tmp_path)["rows"]
  assert [r["model"] for r in rows] == ["plain_cnn", "self_concat"]
  for r in rows:
    assert max(r["zeroed_dev"], r["error_dev"], r["export_dev"]) < 1e-5


def test_presets_table_prints_every_preset():
  result = subprocess.run(
    [sys.executable, "benchmarks/presets_table.py"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert "`thinet-30`" in result.stdout and "`resnet-fmnist`" in result.stdout


def test_latency_quick(tmp_path):
  report = _quick("latency.py", tmp_path)
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quick_model

  from thinet_jax import profile

  flops = profile.count(quick_model.SPEC, quick_model.IMAGE_SIZE)["flops"]
  assert report["models"]["original"]["flops"] == flops
  assert report["summary"]["flops_reduction"] > 2.0  # Paper groups halved.
  for key in ("infer_b1_speedup", "infer_b8_speedup", "train_b8_speedup"):
    assert report["summary"][key] > 0


def test_sweep_speed_quick(tmp_path):
  report = _quick("sweep_speed.py", tmp_path)
  assert report["variants"] == 2 and report["images"] == 32
  assert report["shared_s"] > 0
  assert report["loop_masked_s"] == 2 * report["one_variant_s"]
  for key in ("vmapped_s", "one_variant_s", "loop_materialised_s"):
    assert report[key] > 0


def test_devices_speed_quick(tmp_path):
  rows = _quick("devices_speed.py", tmp_path)["rows"]
  assert [r["devices"] for r in rows] == [1, 2]
  assert rows[0]["train_speedup"] == 1.0
  assert all(r["train_step_s"] > 0 and r["eval_step_s"] > 0 for r in rows)


def test_ablation_quick(tmp_path):
  report = _quick("ablation.py", tmp_path)
  [run] = report["runs"]
  assert run["row"] == "all" and "--config.centred=True" in run["command"]
  assert len(run["epochs"]) == 2  # one eval per final fine-tune epoch
  assert run["accuracy"] == run["epochs"][-1]
  [row] = report["summary"]
  assert row["accuracy"] == [run["accuracy"], 0.0]
  assert row["flops_reduction"] > 1.0
  assert "| all | 1 |" in (tmp_path / "out.md").read_text()


def test_benchmarks_md_is_what_the_committed_json_gives(tmp_path):
  """BENCHMARKS.md is never edited by hand: regenerated from the JSON it
  must come out the same, and every number in it is a JSON value."""
  check = subprocess.run(
    [sys.executable, "benchmarks/make_report.py", "--check"],
    capture_output=True, text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert check.returncode == 0, check.stdout + check.stderr[-3000:]
  out, plots = tmp_path / "B.md", tmp_path / "plots"
  subprocess.run(
    [sys.executable, "benchmarks/make_report.py", f"--out={out}",
     f"--plots={plots}"],
    check=True, capture_output=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  text = out.read_text()
  assert text == (ROOT / "BENCHMARKS.md").read_text()
  peer = {
    f"peer_{m}.png" for m in ("vgg", "resnet")
    if (ROOT / "benchmarks" / f"peer_{m}.json").exists()
  }  # fmt: skip
  assert {p.name for p in plots.iterdir()} == {
    "ablation_oneshot.png", "greedy_speed.png", "selection.png",
    "selection_together.png", *peer,
  }  # fmt: skip
  sections = text.split("\n## ")[1:]
  assert all("Reproduce" in s or "Not measured yet" in s for s in sections)
  greedy = json.loads((ROOT / "benchmarks" / "greedy_speed.json").read_text())
  for r in greedy["rows"]:
    assert f"| {r['channels']} | {r['samples']:,} | " in text
    assert f"| {r['speedup']:.0f}x |" in text
  oneshot = json.loads(
    (ROOT / "benchmarks" / "ablation_oneshot.json").read_text()
  )
  for s in oneshot["summary"]:
    mean, spread = s["accuracy"]
    assert f"| {100 * mean:.2f} ± {100 * spread:.2f} | 3.27x |" in text


def test_selection_quick_matches_a_materialised_pruned_model(tmp_path):
  """The per-layer comparison's cells are accuracies of the masked sweep;
  pruning the same layer for real (greedy order, least squares or none,
  surgery) and evaluating the smaller model must give the same numbers."""
  report = _quick("selection.py", tmp_path)
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import selection

  from thinet_jax import groups, reconstruct, select, surgery, train

  spec, variables, group_stats, eval_batches = selection._quick_setup()[:4]
  assert list(report["layers"]) == list(group_stats)
  for name, per_consumer in group_stats.items():
    (st,) = per_consumer.values()  # a VGG group has one consumer
    group = groups.get(spec, name)
    order = select.greedy_order(st.gram)
    for k, ratio in enumerate(report["ratios"]):
      keep = select.keep_indices(order, select.keep_count(group.width, ratio))
      for method, scales in (
        ("thinet", reconstruct.ridge_scales(st.gram, keep)),
        ("thinet_no_ls", np.ones(len(keep), np.float32)),
      ):
        small = surgery.prune(spec, variables, group, keep, scales)
        acc = train.evaluate(*small, eval_batches())["accuracy"]
        assert report["layers"][name][method][0]["accuracy"][k] == acc
  # The summary is the mean over groups; random's spread is over 2 seeds.
  for method, entry in report["summary"].items():
    runs = [report["layers"][g][method] for g in report["layers"]]
    assert len(runs[0]) == (2 if method == "random" else 1)
    for k in range(len(report["ratios"])):
      means = [
        np.mean([r[s]["accuracy"][k] for r in runs])
        for s in range(len(runs[0]))
      ]
      assert entry["accuracy"][k][0] == pytest.approx(np.mean(means))


def test_selection_together_quick_prunes_all_groups_for_real(tmp_path):
  """--together: every group pruned at once. ThiNet's cells right after
  pruning equal the groups pruned for real one after another (greedy
  order, least squares, surgery); the summary is the mean and spread over
  seeds; fine-tuned cells are accuracies of the same variants."""
  report = _quick("selection.py", tmp_path, "--together")
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import selection

  from thinet_jax import groups, reconstruct, select, surgery, train

  spec, variables, group_stats, eval_batches = selection._quick_setup()[:4]
  assert report["groups"] == list(group_stats)
  assert report["finetune_steps"] == 2
  for k, ratio in enumerate(report["ratios"]):
    small = spec, variables
    for name, per_consumer in group_stats.items():
      (st,) = per_consumer.values()
      group = groups.get(small[0], name)
      keep = select.keep_indices(
        select.greedy_order(st.gram), select.keep_count(group.width, ratio)
      )
      scales = reconstruct.ridge_scales(st.gram, keep)
      small = surgery.prune(*small, group, keep, scales)
    acc = train.evaluate(*small, eval_batches())["accuracy"]
    for run in report["runs"]["thinet"]:
      assert run["accuracy"][k] == acc
      assert run["counts"][k] == [groups.get(small[0], n).width
                                  for n in group_stats]  # fmt: skip
  for method, runs in report["runs"].items():
    assert [r["seed"] for r in runs] == report["seeds"]
    for key in ("accuracy", "accuracy_finetuned", "relative_error"):
      for k in range(len(runs[0][key])):
        values = [r[key][k] for r in runs]
        mean, spread = report["summary"][method][key][k]
        assert mean == pytest.approx(np.mean(values))
        assert spread == pytest.approx(np.std(values, ddof=1))
    for r in runs:
      assert len(r["accuracy_finetuned"]) == len(report["finetune_ratios"])
      assert all(0 <= a <= 1 for a in r["accuracy_finetuned"])


def test_stats_speed_quick(tmp_path):
  report = _quick("stats_speed.py", tmp_path)
  assert [(r["group"], r["mode"]) for r in report["rows"]] == [
    ("conv1_1", "sampled"), ("conv1_1", "exhaustive")
  ]  # fmt: skip
  for r in report["rows"]:
    assert r["first_call_s"] > 0 and r["per_batch_s"] >= 0
    assert r["ratio"] == r["per_batch_s"] / report["forward_per_batch_s"]


def test_recipes_quick_tabulates_the_run_it_made(tmp_path):
  """ThiNet-Tiny (runlocal: two groups at a quarter width after the GAP
  head) through train.prune; the row is that run's report."""
  report = _quick("recipes.py", tmp_path)
  (row,) = report["rows"]
  assert (row["recipe"], row["criterion"]) == ("ThiNet-Tiny", "thinet")
  run = json.loads((tmp_path / "out_runs" / "vgg-tiny-thinet" /
                    "report.json").read_text())  # fmt: skip
  assert row["accuracy"] == run["pruned"]["accuracy"]
  assert row["params"] == run["pruned"]["params"]
  assert row["head_accuracy"] == run["head"]["accuracy_least_squares"]
  assert run["pruned"]["spec"]["head"] == "gap"
  assert [(s["group"], s["width_after"]) for s in run["steps"]] == [
    ("conv1_1", 4), ("conv2_1", 8)
  ]  # fmt: skip
  assert run["config"]["criterion"] == "thinet"
  assert run["config"]["centred"] is False  # `:paper`
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import recipes

  assert "| ThiNet-Tiny | thinet |" in recipes.markdown(report["rows"])


def test_recipes_latency_measures_each_run_against_its_baseline(tmp_path):
  """`--latency` on rows read from train.prune reports: the pruned model
  beside each report against the report's `init_checkpoint` (quick-sized
  models here: the quick run above would measure full vgg16-fmnist); a
  report without its model is left unmeasured."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import latency
  import quick_model
  import recipes

  from thinet_jax import models, profile, train

  spec, size = quick_model.SPEC, quick_model.IMAGE_SIZE
  train.save_model(
    str(tmp_path / "base"), spec, models.init(spec, jax.random.key(0), size),
    size,
  )  # fmt: skip
  rows = []
  for name in ("run", "lost"):  # "lost": a report without its model
    (tmp_path / name).mkdir()
    report = tmp_path / name / "report.json"
    config = {"init_checkpoint": str(tmp_path / "base")}
    report.write_text(json.dumps({"config": config}))
    rows.append({"recipe": name, "criterion": "thinet", "report": str(report)})
  small, variables = latency._half_width(
    *train.load_model(str(tmp_path / "base"))[:2]
  )
  train.save_model(str(tmp_path / "run" / "model"), small, variables, size)
  recipes.add_latency(rows, str(tmp_path), repeat=2)
  measured, lost = rows
  assert "latency" not in lost
  flops = (
    profile.count(spec, size)["flops"] / profile.count(small, size)["flops"]
  )
  assert measured["latency"]["flops_reduction"] == pytest.approx(flops)
  assert flops > 1.5  # really pruned
  for key in ("infer_b1_speedup", "infer_b128_speedup", "train_b128_speedup"):
    assert measured["latency"][key] > 0
  table = recipes.latency_markdown(rows)
  assert "| run | thinet |" in table and "| lost |" not in table


def test_onnx_latency_quick(tmp_path):
  report = _quick("onnx_latency.py", tmp_path)
  (row,) = report["rows"]
  for kind in ("original", "pruned"):
    assert row[kind]["max_diff_over_max_logit"] < 1e-4
    assert all(row[kind][f"b{b}_s"] > 0 for b in report["batches"])
  assert row["pruned"]["flops"] < row["original"]["flops"]


def test_latency_of_a_users_models_goes_to_their_run_folder(tmp_path):
  """The README's latency command writes beside the pruned model, never
  into the committed benchmarks/latency.json."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import latency
  import quick_model

  from thinet_jax import models, train

  spec = quick_model.SPEC
  variables = models.init(spec, jax.random.key(0), quick_model.IMAGE_SIZE)
  small_spec, small_vars = latency._half_width(spec, variables)
  train.save_model(str(tmp_path / "base"), spec, variables, 32)
  train.save_model(str(tmp_path / "run" / "model"), small_spec, small_vars, 32)
  committed = (ROOT / "benchmarks" / "latency.json").read_bytes()
  result = subprocess.run(
    [sys.executable, "benchmarks/latency.py", f"--baseline={tmp_path / 'base'}",
     f"--pruned={tmp_path / 'run' / 'model'}", "--repeat=1"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "run" / "latency.json").read_text())
  assert report["summary"]["flops_reduction"] > 2.0
  assert (ROOT / "benchmarks" / "latency.json").read_bytes() == committed
  quick = subprocess.run(
    [sys.executable, "benchmarks/latency.py", "--quick"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert quick.returncode != 0 and "--quick needs --out" in quick.stderr
