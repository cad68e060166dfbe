"""One formatter and one linter, enforced by the test command."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _ruff(*args):
  return subprocess.run(
    [sys.executable, "-m", "ruff", *args, str(ROOT)],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )


def test_ruff_format():
  result = _ruff("format", "--check")
  assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint():
  result = _ruff("check")
  assert result.returncode == 0, result.stdout + result.stderr
