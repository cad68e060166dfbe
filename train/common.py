"""Config glue shared by the entry points: model, data and fit from a config.

Everything here is wiring; the logic lives in `thinet_jax`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections

from thinet_jax import (
  data,
  factories,
  groups,
  models,
  nets,
  presets,
  progress,
  rundir,
  sharding,
  train,
)
from thinet_jax.spec import ModelSpec
from train import cli
from train.cli import (  # noqa: F401 (common's public names)
  USER_ERRORS,
  define_flags,
  one_line,
  quiet_logging,
  start,
)


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


def checkpoint_spec(config: ml_collections.ConfigDict) -> ModelSpec:
  """The spec of `config.init_checkpoint` (read from its metadata alone,
  no variables), checked against `config.model` and `config.image_size`;
  without a checkpoint, the preset's."""
  if factories.is_factory(config.model):
    return _factory_model(config)[0]
  if not config.init_checkpoint:
    return presets.get(config.model)
  spec, meta = train.model_meta(config.init_checkpoint)
  if spec is None:
    raise ValueError(
      f"{config.init_checkpoint} holds a model of factory "
      f"{meta.get('factory')!r}, not the preset config.model="
      f"{config.model!r}; set config.model to that factory"
    )
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
  return spec


def input_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """How images are preprocessed (`data.dataset`'s keywords): the config's
  `preprocessing`, with `normalization` (mean, std) overriding its mean
  and std when set."""
  norm = config.get("normalization", ())
  return {
    "preprocessing": config.preprocessing,
    "normalization": (
      (tuple(norm[0]), tuple(norm[1])) if norm else None
    ),
  }  # fmt: skip


def group_names(config: ml_collections.ConfigDict, model) -> list[str]:
  """The groups a train.prune / train.sweep config prunes, in order:
  `config.groups`, else the model's default (a preset's paper groups, any
  other model's groups); with `config.smoke_groups = n`, n of those (a
  preset's first group of each of its first n stages, any other model's
  first n)."""
  from thinet_jax import procedure

  spec = spec_of(model)
  if config.groups:
    names = list(config.groups)
  elif spec is None:
    names = [g.name for g in nets.of(model).traced.groups]
  else:
    names = [g.name for g in groups.paper_groups(spec)]
  n = config.get("smoke_groups", 0)
  if not n:
    return names
  if spec is None:
    return names[:n]
  ends = procedure.stage_ends(spec)
  starts = [0] + [i + 1 for i, name in enumerate(names) if name in ends]
  return [names[i] for i in starts[:n] if i < len(names)]


def validate_training(config: ml_collections.ConfigDict) -> None:
  """The fields every command shares, checked before any work: the model
  preset, the schedule, sizes and counts."""
  from absl import app

  if factories.is_factory(config.model):
    try:
      factories.resolve(config.model)
    except factories.FactoryError as e:
      raise app.UsageError(f"config.model: {e}") from None
  elif config.model not in presets.names():
    raise app.UsageError(
      f"config.model={config.model!r} is not a preset (known: "
      f"{', '.join(presets.names())}) nor a model factory "
      "'package.module:function'"
    )
  for field, value in config.items():  # nan passes every `< 0` check
    if isinstance(value, float) and not math.isfinite(value):
      raise app.UsageError(
        f"config.{field} must be a finite number, got {value}"
      )
  norm = config.get("normalization", ())
  if norm:
    try:
      mean, std = (tuple(float(v) for v in part) for part in norm)
      assert len(mean) == len(std) > 0 and all(v > 0 for v in std)
    except (TypeError, ValueError, AssertionError):
      raise app.UsageError(
        "config.normalization must be (mean, std), one value per channel "
        "in [0, 1] units and std > 0, e.g. "
        f"'--config.normalization=((0.286,),(0.353,))'; got {norm!r}"
      ) from None
  if config.schedule not in ("cosine", "step", "constant"):
    raise app.UsageError(
      'config.schedule must be "cosine", "step" or "constant", got '
      f"{config.schedule!r}"
    )
  for field in ("batch_size", "image_size", "log_every_steps",
                "checkpoint_every_steps", "eval_every_epochs"):  # fmt: skip
    if config[field] < 1:
      raise app.UsageError(f"config.{field} must be >= 1, got {config[field]}")
  for field in ("num_epochs", "learning_rate", "warmup_epochs",
                "weight_decay", "momentum"):  # fmt: skip
    if config[field] < 0:
      raise app.UsageError(f"config.{field} must be >= 0, got {config[field]}")
  if config.batch_size % jax.process_count():
    raise app.UsageError(
      f"config.batch_size={config.batch_size} must be a multiple of the "
      f"{jax.process_count()} processes"
    )
  data.source(config.dataset, config.train_split, config.data_dir or None)


@contextlib.contextmanager
def locked(workdir: str):
  """`rundir.lock(workdir)` on process 0 (the one that writes reports);
  every process checks the workdir is writable."""
  if sharding.is_main_process():
    with rundir.lock(workdir):
      yield
  else:
    rundir.ensure_writable(workdir)
    yield


def setup(config: ml_collections.ConfigDict) -> Run:
  """Model (from `init_checkpoint` or a fresh init of the preset or the
  factory) and data."""
  if factories.is_factory(config.model):
    spec, variables = _factory_model(config, read=True)
  elif config.init_checkpoint:
    checkpoint_spec(config)  # The architecture and image size match.
    spec, variables, _ = train.load_model(config.init_checkpoint)
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
      **input_kwargs(config), crop_pad=config.crop_pad,
      seed=seed, num_epochs=None,
    )  # fmt: skip

  n_train = len(data.source(config.dataset, config.train_split, data_dir))
  n_eval = len(data.source(config.dataset, config.eval_split, data_dir))
  steps = config.steps_per_epoch
  if steps <= 0:
    steps = n_train // config.batch_size

  def eval_data():
    ds = data.dataset(
      config.dataset, config.eval_split, data_dir=data_dir,
      batch_size=per_process, image_size=config.image_size, train=False,
      **input_kwargs(config),
    )  # fmt: skip
    n = -(-n_eval // config.batch_size)  # The last batch is padded.
    if config.eval_batches >= 0:
      n = min(n, config.eval_batches)
    return progress.Sized(itertools.islice(ds, n), n)

  return Run(config, spec, variables, train_data, eval_data, steps, n_train)


def input_channels(config: ml_collections.ConfigDict) -> int:
  """Channels of the config's images (after its preprocessing)."""
  ds = data.dataset(
    config.dataset, config.eval_split, data_dir=config.data_dir or None,
    batch_size=1, image_size=config.image_size, train=False,
    **input_kwargs(config),
  )  # fmt: skip
  return int(next(iter(ds))["image"].shape[-1])


def _factory_model(config: ml_collections.ConfigDict, read: bool = False):
  """(Net, variables) of a factory model: its own init, the model directory
  `init_checkpoint` names (a pruned one included), or the factory's
  variables read from an Orbax / msgpack / safetensors checkpoint; the
  variables are only read with `read`."""
  path = config.init_checkpoint
  if path and train.has_checkpoint(path):  # a model directory of ours
    if not read:
      _, meta = train.model_meta(path)
      if meta.get("factory") != config.model:
        raise ValueError(
          f"{path} holds a model of {meta.get('factory') or 'a preset'}, not "
          f"of config.model={config.model!r}"
        )
      return train.model_of(meta), None
    net, variables, _ = train.load_model(path)
    return net, variables
  net, variables = factories.build(
    config.model, config.image_size, input_channels(config), config.seed
  )
  if path and read:
    variables = factories.read_variables(path, variables)
  return net, variables


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
    batch_size = max(local, size - size % local)
    return progress.Sized(
      data.pipeline(
        sample, batch_size=batch_size, image_size=config.image_size,
        train=False, dataset_name=config.dataset,
        **input_kwargs(config), in_memory=images is not None,
      ),
      -(-len(idx) // (batch_size * jax.process_count())),
    )  # fmt: skip

  return batches


def write_json(path: str, obj: Any) -> None:
  """Process 0 writes `obj` to `path` atomically; other processes skip."""
  if sharding.is_main_process():
    rundir.write_json(path, obj)


# Config fields that change no result: how often to log and checkpoint,
# where the data lies, how to resume. Every other field is recorded in a
# step's fingerprint. The starting model is fingerprinted by its values,
# not its path.
NOT_DETERMINING = (
  "log_every_steps", "checkpoint_every_steps", "data_dir", "restart_from",
  "init_checkpoint",
)  # fmt: skip
# Fields of the procedure's plan (recorded per group step as the plan).
PLAN_FIELDS = (
  "groups", "keep_ratio", "budget", "budget_metric", "finetune_epochs",
  "stage_end_epochs", "finetune_lr",
)  # fmt: skip
# Fields of the final fine-tune (train.prune) or of training (train.main).
FINAL_FIELDS = (
  "num_epochs", "learning_rate", "schedule", "warmup_epochs",
  "lr_drop_epochs", "lr_drop_factor", "eval_every_epochs",
)  # fmt: skip


# Fields only fine-tunes read. The final fine-tune records them; the steps
# before it only when they fine-tune (so a one-shot pass, which does not,
# is reused by a rerun with other fine-tune settings).
TRAINING_FIELDS = (
  "momentum", "nesterov", "weight_decay", "decay_all", "crop_pad",
  "distill_weight", "distill_temperature", "distill_features",
)  # fmt: skip


def _fine_tunes_before_final(config: ml_collections.ConfigDict) -> bool:
  head = bool(config.get("head")) and config.get("head_finetune_epochs", 0) > 0
  groups = config.get("finetune_epochs", 0) > 0
  return head or groups or config.get("stage_end_epochs", 0) > 0


def determinants(
  config: ml_collections.ConfigDict, model, variables: dict[str, Any]
) -> dict[str, Any]:
  """What every step of a run depends on: the library version, the
  starting model's computation (the digest of its traced program) and
  values (sha256), and the config's fields, less those of the plan and
  the final fine-tune (recorded by the steps they reach), and less the
  fine-tune fields when no step before the final one trains."""
  import thinet_jax

  skip = set(NOT_DETERMINING + PLAN_FIELDS + FINAL_FIELDS)
  if not _fine_tunes_before_final(config):
    skip |= set(TRAINING_FIELDS)
  return {
    "library": thinet_jax.__version__,
    rundir.PROGRAM_FIELD: factories.program_digest(model, config.image_size),
    "start_model_sha256": rundir.tree_hash(variables),
    "config": {k: v for k, v in config.to_dict().items() if k not in skip},
  }


def final_determinants(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {k: config.to_dict().get(k) for k in FINAL_FIELDS + TRAINING_FIELDS}


def finished_report(workdir: str, outputs: Iterable[str]) -> dict | None:
  """The report of a finished run (report.json and every output present),
  else None: a rerun of a finished run only prints it again."""
  report = rundir.read_json(os.path.join(workdir, "report.json"))
  if report is None or not all(
    os.path.exists(os.path.join(workdir, o)) for o in outputs
  ):
    return None
  return report


def model_report(run: Run, spec, variables, history) -> dict[str, Any]:
  """Accuracy (last evaluation, else a fresh one), params and FLOPs."""
  result = (
    history[-1] if history else train.evaluate(spec, variables, run.eval_data())
  )
  prof = factories.count(nets.of(spec), run.config.image_size)
  return {
    "model": spec.to_dict() if spec_of(spec) else nets.of(spec).meta,
    "params": prof["params"],
    "flops": prof["flops"],
    **{k: v for k, v in result.items() if k not in ("step", "epoch")},
    "history": history,
  }


def spec_of(model) -> ModelSpec | None:
  """The preset's spec of a model, None for a factory's."""
  return nets.of(model).spec


def save_model(directory: str, run: Run, spec, variables) -> None:
  train.save_model(directory, spec, variables, run.config.image_size)


run = cli.run  # every command's `if __name__ == "__main__"`
