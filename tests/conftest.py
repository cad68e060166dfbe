"""Shared test set-up: one compilation cache, randomised variables."""

import os
import shutil
import tempfile

# One persistent XLA compilation cache for the whole run, shared by both
# xdist workers and every `train.*` subprocess a test starts (they inherit
# the environment from the pytest process that loads this file first): the
# command tests run the same small models again and again, and a runlocal
# `train.prune` took 78 s compiling from scratch against 31 s from the
# cache (every compile stored). A size limit turns on JAX's file lock, so
# concurrent processes never read a half-written entry. Only compiles over
# JAX's default 1 s are stored: storing every small eager op too made the
# in-process tests slower (the README examples 147 -> 272 s). Set before
# JAX is imported, which reads these variables once. A cache the user set
# is used and left alone.
OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
    prefix="thinet-jax-tests-"
  )
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from thinet_jax import models, presets, train  # noqa: E402
from thinet_jax.spec import ModelSpec  # noqa: E402

# Exact float32 matmuls on accelerators too (CPU is exact already), so the
# tolerances against the float64 NumPy references hold on every backend.
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_sessionfinish(session):
  """The process that made the cache (pytest, or xdist's controller; its
  workers inherit the variable) removes it."""
  if OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def random_variables(spec, image_size, seed=0):
  """Random variables of a spec's shapes, drawn with NumPy (no compile).

  Kernels are He-normal over fan-in, so activations keep their scale through
  deep presets; BatchNorm scale, bias and running statistics are random too,
  since fresh BatchNorm (mean 0, var 1, scale 1, bias 0) is nearly the
  identity and a test that forgot it would still pass. (Flax's jitted init
  of a deep net takes seconds to compile on CPU; the tests only need values.)
  """
  x = jax.ShapeDtypeStruct(
    (1, image_size, image_size, spec.in_channels), np.float32
  )
  shapes = jax.eval_shape(models.build(spec).init, jax.random.key(0), x)
  shapes = {k: shapes[k] for k in ("params", "batch_stats") if k in shapes}
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    collection = path[0].key
    shape = leaf.shape
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif collection == "batch_stats" and name == "var":
      value = rng.uniform(0.5, 2.0, shape)
    elif collection == "batch_stats" and name == "mean":
      value = rng.normal(0.0, 0.3, shape)
    elif name == "scale":
      value = 1.0 + rng.normal(0.0, 0.2, shape)
    else:  # conv, dense and BatchNorm biases
      value = rng.normal(0.0, 0.2, shape)
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
  """A vgg16-fmnist-shaped model with random variables (no training)."""
  spec = presets.get("vgg16-fmnist")
  directory = tmp_path_factory.mktemp("model") / "model"
  train.save_model(str(directory), spec, random_variables(spec, 32), 32)
  return directory


# Tiny specs covering every group kind: VGG with and without BatchNorm,
# flatten and global-pooling heads; ResNet with both stride placements.
SPECS = {
  "vgg_bn_fc": ModelSpec(
    family="vgg", layers=(4, "M", 6, 5, "M"), head="fc", fc_widths=(7,),
    batch_norm=True, num_classes=3, in_channels=2,
  ),
  "vgg_plain_fc": ModelSpec(
    family="vgg", layers=(4, 6, "M", 5), head="fc", num_classes=3,
    in_channels=2,
  ),
  "vgg_bn_gap": ModelSpec(
    family="vgg", layers=(4, "M", 6, 5), head="gap", batch_norm=True,
    num_classes=3, in_channels=2,
  ),
  "vgg_plain_gap": ModelSpec(
    family="vgg", layers=(4, "M", 6, 5), head="gap", num_classes=3,
    in_channels=2,
  ),
  **{
    f"resnet_{p}": presets.resnet_thinet(
      1.0, stage_sizes=(2, 1), inner=(3, 5), out=(8, 12), stem="small",
      stem_width=4, stride_placement=p, num_classes=3, in_channels=2,
    )
    for p in ("caffe", "torchvision")
  },
  "resnet_nobn": presets.resnet_thinet(
    1.0, stage_sizes=(1, 1), inner=(3, 5), out=(8, 12), stem="small",
    stem_width=4, num_classes=3, in_channels=2,
  ).replace(batch_norm=False),
}  # fmt: skip


def kill_at_first_checkpoint(cmd, checkpoints, cwd):
  """Runs `cmd` and SIGKILLs it as soon as an Orbax step directory appears
  in `checkpoints` (a fine-tune that has started and not finished)."""
  import signal
  import subprocess
  import time

  proc = subprocess.Popen(
    cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if checkpoints.exists() and any(
      p.name.isdigit() for p in checkpoints.iterdir()
    ):
      break
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
