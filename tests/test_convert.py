"""train.convert and save_model as a user meets them: every input error
is one line before any work, a user's folder is never replaced, two saves
to one path both leave a whole model and nothing beside it."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from thinet_jax import rundir, train
from train import convert

from conftest import random_variables

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _user_folder(tmp_path):
  folder = tmp_path / "mine"
  folder.mkdir()
  (folder / "notes.txt").write_text("keep me")
  return folder


def _weights(tmp_path, tensors):
  path = tmp_path / "w.safetensors"
  save_file(tensors, str(path))
  return path


CASES = {
  "missing weights": (
    lambda t: ["--weights", str(t / "nope.safetensors")],
    "not found",
  ),
  "weights a folder": (lambda t: ["--weights", str(t)], "is a directory"),
  "unknown arch": (lambda t: ["--arch", "vgg19"], "unknown torchvision arch"),
  "image size 0": (lambda t: ["--image_size", "0"], "--image_size must be"),
  "out is a user's folder": (
    lambda t: ["--out", str(_user_folder(t))],
    "did not write",
  ),
  "empty safetensors": (
    lambda t: ["--weights", str(t / "empty.safetensors")],
    "empty.safetensors",
  ),
  "another architecture's weights": (
    lambda t: [],  # the default weights hold one unrelated tensor
    "features.0.weight",
  ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_convert_input_errors_are_one_line(tmp_path, capsys, case):
  make, phrase = CASES[case]
  (tmp_path / "empty.safetensors").write_bytes(b"")
  weights = _weights(tmp_path, {"fc.weight": np.zeros((2, 3), np.float32)})
  argv = {
    "--source": "torchvision", "--arch": "vgg16", "--weights": str(weights),
    "--out": str(tmp_path / "out"), "--image_size": "32",
  }  # fmt: skip
  given = make(tmp_path)
  argv.update(zip(given[::2], given[1::2], strict=True))
  with pytest.raises(SystemExit) as exit_info:
    convert.main([a for kv in argv.items() for a in kv])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("train.convert: error: ") and "\n" not in err, err
  assert phrase in err, err
  assert not (tmp_path / "out").exists()
  if (tmp_path / "mine").exists():
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


SAVE = """
import sys
from conftest import random_variables
from test_train import SPEC
from thinet_jax import train
variables = random_variables(SPEC, 8, int(sys.argv[2]))
train.save_model(sys.argv[1], SPEC, variables, 8)
"""


def test_two_saves_to_one_directory_each_leave_a_whole_model(tmp_path):
  """Two processes saving to one --out at once: both succeed, the path
  holds one of the two models whole, and no temporary is left beside it."""
  out = tmp_path / "model"
  env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", SAVE, str(out), str(seed)],
      env=env,
      cwd=ROOT,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for seed in (0, 1)
  ]
  for p in procs:
    assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
  _, got, _ = train.load_model(str(out))
  from test_train import SPEC

  def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])

  assert any(
    np.array_equal(flat(got), flat(random_variables(SPEC, 8, seed)))
    for seed in (0, 1)
  )
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
  assert (out / rundir.MARKER).exists()
