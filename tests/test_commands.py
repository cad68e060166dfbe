"""End-to-end smoke runs of the command-line entry points (runlocal)."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize(
  "config, model",
  [("fmnist_vgg16", ""), ("fmnist_resnet", ""),
   ("fmnist_vgg16", "tests.user_nets:nnx_cnn")],
)  # fmt: skip
def test_describe_runlocal(tmp_path, config, model):
  result = subprocess.run(
    [
      sys.executable, "-m", "train.describe",
      f"--config=configs/{config}.py:runlocal",
      f"--workdir={tmp_path}", "--config.batch_size=8",
      *([f"--config.model={model}"] if model else []),
    ],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["examples"] == 16  # 2 eval batches of 8 (runlocal)
  assert report["config"]["batch_size"] == 8
  assert 0.0 <= report["accuracy"] <= 1.0
  assert report["eval_images_per_second"] > 0
  for consumer in report["consumers"].values():
    assert 0.0 <= consumer["zero_fraction"] <= 1.0
    assert consumer["input_shape"][0] == 8
  # The per-layer table is printed.
  assert re.search(r"^total\s", result.stdout, re.M), result.stdout


def test_bad_config_argument_is_an_error(tmp_path):
  result = subprocess.run(
    [
      sys.executable, "-m", "train.describe",
      "--config=configs/fmnist_vgg16.py:fast", f"--workdir={tmp_path}",
    ],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode != 0
  assert "unknown config argument 'fast'" in result.stderr


def _python_blocks(page):
  text = (ROOT / page).read_text()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert blocks, f"{page} has no Python example"
  return blocks


def test_readme_python_examples_run(capsys):
  """The README's examples: a Linen and an NNX model that are not ours
  pruned through the dependency graph (each in under 15 lines), then the
  shipped model's conv3_1 pruned for real."""
  blocks = _python_blocks("README.md")
  assert len(blocks) == 3
  printed = []
  for k, block in enumerate(blocks):
    lines = [line for line in block.splitlines() if line.strip()]
    assert k == 2 or len(lines) < 15
    exec(compile(block, "README.md", "exec"), {})
    printed.append(capsys.readouterr().out)
  linen = printed[0]
  assert "{'Conv_0': 16, 'Conv_1': 16, 'Conv_2': 8} (64, 10)" in linen, linen
  assert printed[1].split() == ["16", "(64,", "10)"], printed[1]
  words = printed[2].split()
  assert words[:3] == ["64", "->", "32"], words
  assert 0.0 <= float(words[3]) <= 1.0


@pytest.mark.slow
def test_api_page_examples_run():
  from thinet_jax import select

  registry = dict(select.CRITERIA)  # the page registers a criterion
  try:
    for block in _python_blocks("docs/api.md"):
      exec(compile(block, "docs/api.md", "exec"), {})
  finally:
    select.CRITERIA.clear()
    select.CRITERIA.update(registry)
