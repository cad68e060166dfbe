"""Config glue shared by the entry points: model, data and fit from a config.

Everything here is wiring; the logic lives in `thinet_jax`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
from ml_collections import config_flags

from thinet_jax import data, models, presets, profile, sharding, train
from thinet_jax.spec import ModelSpec


def define_flags():
  """--config (a configs/*.py file, optionally ':runlocal', any field
  overridable as --config.field=value) and --workdir, both required."""
  from absl import flags

  config = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), optionally ':runlocal'."
  )
  workdir = flags.DEFINE_string("workdir", None, "Run directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  # Multi-process (multi-host) runs; also THINET_COORDINATOR,
  # THINET_NUM_PROCESSES, THINET_PROCESS_ID (see sharding.initialize).
  flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process)."
  )
  flags.DEFINE_integer("num_processes", None, "Number of processes.")
  flags.DEFINE_integer("process_id", None, "This process's index.")
  return config, workdir


@dataclasses.dataclass
class Run:
  """A config resolved into a model and its data."""

  config: ml_collections.ConfigDict
  spec: ModelSpec
  variables: dict[str, Any]
  train_data: Callable[[int], Any]  # seed -> endless shuffled train batches
  eval_data: Callable[[], Iterable[dict]]
  steps_per_epoch: int
  train_examples: int


def require_checkpoint(config: ml_collections.ConfigDict, command: str) -> None:
  """Pruning commands start from a trained model: say so if none is set."""
  from absl import app

  if not config.init_checkpoint:
    raise app.UsageError(
      f"config.init_checkpoint is empty: {command} prunes a trained model; "
      "set it to a model directory (e.g. baselines/vgg16-fmnist)"
    )


def setup(config: ml_collections.ConfigDict) -> Run:
  """Model (from `init_checkpoint` or a fresh init of the preset) and data."""
  if config.init_checkpoint:
    spec, variables, meta = train.load_model(config.init_checkpoint)
    expected = presets.get(config.model)
    if spec.skeleton() != expected.skeleton():
      raise ValueError(
        f"{config.init_checkpoint} holds a model of another architecture "
        f"than config.model={config.model!r}: {spec.to_json(indent=None)}; "
        "set config.model to the checkpoint's preset"
      )
    if meta["image_size"] != config.image_size:
      raise ValueError(
        f"{config.init_checkpoint} was trained at image_size "
        f"{meta['image_size']}, the config says {config.image_size}"
      )
  else:
    spec = presets.get(config.model)
    variables = models.init(
      spec, jax.random.key(config.seed), config.image_size
    )
  per_process = config.batch_size // jax.process_count()
  data_dir = config.data_dir or None

  def train_data(seed: int):
    return data.dataset(
      config.dataset, config.train_split, data_dir=data_dir,
      batch_size=per_process, image_size=config.image_size, train=True,
      preprocessing=config.preprocessing,
      seed=seed, num_epochs=None,
    )  # fmt: skip

  n_train = len(data.source(config.dataset, config.train_split, data_dir))
  steps = config.steps_per_epoch
  if steps <= 0:
    steps = n_train // config.batch_size

  def eval_data():
    ds = data.dataset(
      config.dataset, config.eval_split, data_dir=data_dir,
      batch_size=per_process, image_size=config.image_size, train=False,
      preprocessing=config.preprocessing,
    )  # fmt: skip
    n = None if config.eval_batches < 0 else config.eval_batches
    return itertools.islice(ds, n)

  return Run(config, spec, variables, train_data, eval_data, steps, n_train)


def fit(
  run: Run,
  variables,
  workdir: str,
  desc: str,
  spec=None,
  config=None,
  data_seed: int | None = None,
  eval_data: bool = True,
  teacher: train.Teacher | None = None,
):
  """`train.fit` with the run's data and the config's schedule.

  data_seed: shuffling/augmentation seed (default config.seed); fine-tunes
  of a procedure each take their own, so none replays another's batches.
  teacher: distil from this model.
  """
  config = config or run.config
  seed = run.config.seed if data_seed is None else data_seed
  return train.fit(
    spec or run.spec, variables, train_data=run.train_data(seed),
    eval_data=run.eval_data if eval_data else None, config=config,
    steps_per_epoch=run.steps_per_epoch, image_size=run.config.image_size,
    workdir=workdir, seed=run.config.seed, desc=desc, teacher=teacher,
  )  # fmt: skip


def stats_batches(config: ml_collections.ConfigDict):
  """seed -> statistics batches: `config.images_per_class` class-balanced
  training images (the paper's sample, section 4.1), unaugmented.

  A small split (Fashion-MNIST, CIFAR-10) is decoded once into memory; a
  large one (ImageNet) is sampled from its labels alone and only the
  chosen records are read and decoded."""
  data_dir = config.data_dir or None
  src = data.source(config.dataset, config.train_split, data_dir)
  if data.is_small(src):
    images, labels = data.arrays(config.dataset, config.train_split, data_dir)
  else:
    images, labels = (
      None,
      data.labels(config.dataset, config.train_split, data_dir),
    )

  def batches(seed: int):
    idx = data.class_balanced(labels, config.images_per_class, seed)
    # Every process reads its own share of the images (padded with masked
    # records to equal shares); the statistics are summed over all.
    local = jax.local_device_count()  # Batches split evenly over devices.
    size = min(config.batch_size, len(idx)) // jax.process_count()
    sample = (
      data.ArraySource(images[idx], labels[idx]) if images is not None
      else data.Subset(src, idx)
    )  # fmt: skip
    return data.pipeline(
      sample, batch_size=max(local, size - size % local),
      image_size=config.image_size, train=False, dataset_name=config.dataset,
      preprocessing=config.preprocessing, in_memory=images is not None,
    )  # fmt: skip

  return batches


def start(argv) -> tuple[ml_collections.ConfigDict, str, float]:
  """Shared preamble of the commands: (config, workdir, start time)."""
  from absl import app, flags

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_logging()
  sharding.default_cpu_devices()
  f = flags.FLAGS
  sharding.initialize(f.coordinator_address, f.num_processes, f.process_id)
  return f.config, f.workdir, time.time()


def write_json(path: str, obj: Any) -> None:
  """Process 0 writes `obj` to `path` atomically; other processes skip."""
  if not sharding.is_main_process():
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def model_report(run: Run, spec, variables, history) -> dict[str, Any]:
  """Accuracy (last evaluation, else a fresh one), params and FLOPs."""
  result = (
    history[-1] if history else train.evaluate(spec, variables, run.eval_data())
  )
  prof = profile.count(spec, run.config.image_size)
  return {
    "model": spec.to_dict(),
    "params": prof["params"],
    "flops": prof["flops"],
    **{k: v for k, v in result.items() if k not in ("step", "epoch")},
    "history": history,
  }


def save_model(directory: str, run: Run, spec, variables) -> None:
  train.save_model(directory, spec, variables, run.config.image_size)


def quiet_logging() -> None:
  """Orbax logs every checkpoint step at INFO; keep the console readable
  unless --verbosity was given."""
  from absl import flags, logging

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
