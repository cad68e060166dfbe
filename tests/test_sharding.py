"""One code path on 1 device, 4 virtual devices and 2 processes: the same
statistics, greedy order and training step (tests/sharded_worker.py)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "tests" / "sharded_worker.py")


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _run(out, devices=1, *args):
  result = subprocess.run(
    [sys.executable, WORKER, str(out), *map(str, args)], env=_env(devices),
    capture_output=True, text=True, cwd=ROOT, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(np.load(out))


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  return _run(tmp_path_factory.mktemp("one") / "r.npz")


def _same(got, want):
  assert set(got) == set(want)
  for key in want:
    if key in ("devices", "processes"):
      continue
    if key.startswith("order"):
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    else:
      # Sums split over devices add in another order: float32 rounding.
      np.testing.assert_allclose(
        got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key
      )


@pytest.mark.slow
def test_four_virtual_devices_match_one(one_device, tmp_path):
  four = _run(tmp_path / "r.npz", 4)
  assert int(one_device["devices"]) == 1 and int(four["devices"]) == 4
  _same(four, one_device)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(args_of, timeout):
  """Runs `python <args_of(i)>` for processes i = 0, 1 at once (one CPU
  device each) and checks both exit cleanly."""
  procs = [
    subprocess.Popen(
      [sys.executable, *args_of(i)],
      env=_env(1),
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_two_processes_match_one(one_device, tmp_path):
  port = _free_port()
  _two_processes(
    lambda i: [WORKER, str(tmp_path / f"r{i}.npz"), str(i), "2", str(port)],
    timeout=600,
  )
  assert not (tmp_path / "r1.npz").exists()  # Only process 0 writes.
  two = dict(np.load(tmp_path / "r0.npz"))
  assert int(two["processes"]) == 2 and int(two["devices"]) == 2
  _same(two, one_device)


def test_commands_default_to_two_virtual_cpu_devices():
  code = (
    "from thinet_jax import sharding; sharding.default_cpu_devices(); "
    "import jax; print(jax.device_count())"
  )
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True,
    cwd=ROOT, timeout=300, check=True,
  )  # fmt: skip
  want = 2 if (os.cpu_count() or 1) >= 2 else 1
  assert out.stdout.strip() == str(want)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True,
    cwd=ROOT, timeout=300, check=True,
  )  # fmt: skip
  assert out.stdout.strip() == "3"  # An explicit count wins.


@pytest.mark.slow
def test_prune_command_runs_as_two_processes(tmp_path, small_model):
  port = _free_port()
  workdir = tmp_path / "run"
  _two_processes(
    lambda i: [
      "-m", "train.prune", "--config=configs/fmnist_vgg16_thinet.py:runlocal",
      f"--workdir={workdir}", f"--config.init_checkpoint={small_model}",
      f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
      f"--process_id={i}",
    ],
    timeout=900,
  )  # fmt: skip
  report = json.loads((workdir / "report.json").read_text())
  assert len(report["devices"]) == 2  # One device in each process.
  assert [s["group"] for s in report["steps"]] == ["conv1_1", "conv2_1"]
  # Saved by two processes, restored by one, in a fresh process.
  code = (
    "from thinet_jax import train; "
    f"spec, v, _ = train.load_model({str(workdir / 'model')!r}); "
    "print(spec.layers[:4])"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], env=_env(1), capture_output=True,
    text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "(8, 16, 'M', 16)"
