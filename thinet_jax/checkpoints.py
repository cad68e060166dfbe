"""Checkpoints: the training state, model directories, Orbax I/O.

A `TrainState` (step, params, batch_stats, opt_state) is what a training
run checkpoints; `Checkpointer` writes it with Orbax's CheckpointManager
beside the model's description as JSON (a preset's spec, or a factory's
path and pruned state) and the input iterator's position, and restores it
on any devices from the directory alone. A *model directory* is such a
checkpoint without optimizer state: `save_model` writes one atomically,
`load_model` / `model_meta` read one back, with errors that say what a
path holds instead (a workdir, a training checkpoint, a corrupt copy).

  >>> checkpoints.save_model("runs/x/model", spec, variables, image_size=32)
  >>> model, variables, meta = checkpoints.load_model("runs/x/model")
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from thinet_jax import checks, nets, rundir, sharding
from thinet_jax.depgraph.program import path_name
from thinet_jax.nets import Net
from thinet_jax.spec import ModelSpec

# A preset's spec or any model as a `nets.Net` (`factories` builds those).
Model = ModelSpec | Net


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def create_state(
  variables: dict[str, Any], tx: optax.GradientTransformation
) -> TrainState:
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
  )


def variables_of(state: TrainState) -> dict[str, Any]:
  out = {"params": state.params}
  if state.batch_stats:
    out["batch_stats"] = state.batch_stats
  return out


class Checkpointer:
  """Orbax CheckpointManager for a TrainState, its ModelSpec and the
  input iterator position; `restore` needs nothing but the directory."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(
    self,
    state: TrainState,
    spec: Model,
    image_size: int,
    extra: dict | None = None,
  ) -> None:
    """Saves at `state.step`; `extra` is any JSON (iterator position...).

    Every process calls it (Orbax writes each host's part); host-local
    values (NumPy, one device) are first made global, replicated.
    """
    step = int(state.step)
    state = sharding.replicate(state)
    meta = {
      **nets.of(spec).meta,  # {"spec": ...} or {"factory": ...}
      "image_size": image_size,
      "extra": extra or {},
    }
    self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
      ),
      force=True,
    )

  def meta(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self.manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    ).meta

  def restore(
    self, tx: optax.GradientTransformation | None = None, step=None
  ) -> tuple[Model, TrainState, dict]:
    """(spec, state, extra) of a checkpoint; the shapes come from the spec
    stored in it. Without `tx` the optimizer state is not restored.

    The state comes back replicated over this run's devices, whatever the
    devices, hosts or platform that saved it (a model saved on two virtual
    CPU devices or a GPU restores on one CPU, and the other way round).
    """
    step = self.latest_step() if step is None else step
    meta = self.meta(step)
    spec = model_of(meta)
    shapes = abstract_variables(spec, meta["image_size"])
    abstract = jax.eval_shape(lambda: create_state(shapes, tx or _NO_OPT))
    replicated = sharding.replicated(sharding.data_mesh())
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      abstract,
    )
    mismatch = self._mismatch(step, abstract, meta)
    if mismatch:
      raise ModelMismatchError(mismatch)
    try:
      restored = self.manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)),
      ).state
    except (ValueError, KeyError) as e:
      raise ValueError(
        f"checkpoint {self.directory} step {step} does not match its own "
        f"spec or this optimizer: {e}"
      ) from e
    return spec, restored, meta["extra"]

  def _mismatch(self, step: int, abstract: Any, meta: dict) -> str | None:
    """Why the stored arrays do not fit `abstract` (the model the metadata
    rebuilds today), or None: read from the checkpoint's own array
    metadata, before any data is restored."""
    from absl import logging

    path = os.path.join(self.directory, str(step), "state")
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # "no _CHECKPOINT_METADATA": fine
    try:
      with ocp.StandardCheckpointer() as reader:
        tree = reader.metadata(path).item_metadata
      leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    except Exception:  # noqa: BLE001 (an older layout: the restore checks)
      return None
    finally:
      logging.set_verbosity(level)
    stored = {
      path_name(p): tuple(x.shape) for p, x in leaves if hasattr(x, "shape")
    }
    model = meta.get("factory") or "its preset spec"
    for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]:
      name = path_name(p)
      if name in stored and stored[name] != tuple(x.shape):
        return (
          f"{self.directory} does not fit the model that {model} builds "
          f"now: {name} is stored as {list(stored[name])}, the model has "
          f"{list(x.shape)}; the factory's code or arguments changed since "
          "it was saved: restore that code, or start again from a model "
          "saved under the new code"
        )
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


_NO_OPT = optax.identity()


def abstract_variables(spec: Model, image_size: int) -> dict[str, Any]:
  """Shapes and dtypes of a model's variables, without allocating them."""
  return nets.of(spec).abstract(image_size)


def model_of(meta: dict[str, Any]) -> Model:
  """The model a checkpoint's metadata describes: a preset's ModelSpec,
  or a factory's Net rebuilt with its pruned state."""
  if "spec" in meta:
    return ModelSpec.from_dict(meta["spec"])
  from thinet_jax import factories  # traces the factory's model

  return factories.rebuild(meta)


def model_keys(meta: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in meta.items() if k not in ("image_size", "extra")}


class ModelMismatchError(ValueError):
  """A model directory's arrays do not fit the model its metadata rebuilds
  (the factory's code changed since it was saved)."""


class SpecMismatchError(ValueError):
  """A checkpoint holds a different model than the one asked for."""


def check_destination(directory: str) -> None:
  """Raises rundir.RunError unless `save_model` may write `directory`
  (absent, empty, or a model directory): a command's first check of its
  output path, before any work."""
  rundir.check_replaceable(directory, ours=has_checkpoint)


def save_model(
  directory: str,
  spec: Model,
  variables: dict[str, Any],
  image_size: int,
  extra: dict | None = None,
) -> None:
  """Saves a model (spec + variables, no optimizer) as a checkpoint dir.

  Atomic and repeatable: the model is written under a temporary sibling
  of this process's own (`rundir.temporary_dir`) and swapped in whole
  (`rundir.replace_dir`), replacing a model directory already there, so a
  reader (or a run killed and started again) never meets half a model,
  and saving the same model twice is no error.

  Raises:
    rundir.RunError: `directory` holds something the library did not
      write (a user's folder or file); it is left as it is.
  """
  main = sharding.is_main_process()
  pid = sharding.main_pid()
  if main:
    tmp = rundir.temporary_dir(directory, pid, ours=has_checkpoint)
  sharding.sync(f"save_model start {directory}")
  tmp = rundir.temporary_path(directory, pid)
  ckpt = Checkpointer(tmp, max_to_keep=1)
  ckpt.save(create_state(variables, _NO_OPT), spec, image_size, extra)
  ckpt.wait()
  ckpt.close()
  sharding.sync(f"save_model written {directory}")
  if main:
    rundir.replace_dir(tmp, directory, ours=has_checkpoint)
  sharding.sync(f"save_model done {directory}")


class ModelDirectoryError(FileNotFoundError):
  """A path given as a model directory is not a readable model."""


def model_meta(directory: str) -> tuple[ModelSpec | None, dict[str, Any]]:
  """(spec, meta) of a model directory, without reading its variables: what
  a command checks before it loads anything.

  Raises:
    ModelDirectoryError: as `load_model`.
  """
  ckpt = _open_model(directory)
  try:
    meta = _model_meta(ckpt, directory)
  finally:
    ckpt.close()
  spec = ModelSpec.from_dict(meta["spec"]) if "spec" in meta else None
  return spec, meta


def load_model(directory: str) -> tuple[Model, dict[str, Any], dict]:
  """(spec, variables, meta) of a model directory; needs nothing else.

  Every parameter and statistic is checked to be finite.

  Raises:
    ModelDirectoryError (a FileNotFoundError): no model directory there, a
      training checkpoint given instead, or a corrupt or truncated one; the
      message names the directory (and the parameter) and what to pass.
    checks.NonFiniteError: a parameter holds NaN or inf (its path named).
  """
  ckpt = _open_model(directory)
  try:
    meta = _model_meta(ckpt, directory)
    try:
      spec, state, _ = ckpt.restore()
    except ModelMismatchError:
      raise
    except Exception as e:  # noqa: BLE001 (any read failure is corruption)
      raise _corrupt(directory, _parameter_in(str(e)), e) from None
  finally:
    ckpt.close()
  variables = jax.device_get(variables_of(state))
  checks.check_finite(variables, f"model directory {directory}")
  return spec, variables, meta


_WHAT_A_MODEL_IS = (
  "a model directory is the 'model' folder written by train.main, "
  "train.prune or train.convert"
)


def _open_model(directory: str) -> Checkpointer:
  """A Checkpointer on a directory that looks like a model directory."""
  if not os.path.exists(directory):
    raise ModelDirectoryError(
      f"model directory {directory!r} does not exist; {_WHAT_A_MODEL_IS}"
    )
  if not os.path.isdir(directory):
    raise ModelDirectoryError(
      f"{directory!r} is a file, not a model directory; {_WHAT_A_MODEL_IS}"
    )
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    raise ModelDirectoryError(
      f"{directory!r} is a run's workdir, not a model directory; pass its "
      f"'model' folder ({os.path.join(directory, 'model')})"
    )
  ckpt = Checkpointer(directory)
  if ckpt.latest_step() is None:
    ckpt.close()
    raise ModelDirectoryError(
      f"no checkpoint in {directory!r}; {_WHAT_A_MODEL_IS}"
    )
  return ckpt


def _model_meta(ckpt: Checkpointer, directory: str) -> dict[str, Any]:
  try:
    meta = ckpt.meta()
  except Exception as e:  # noqa: BLE001
    raise _corrupt(directory, "its metadata", e) from None
  if "data" in meta.get("extra", {}):  # fit's checkpoints hold the input.
    raise ModelDirectoryError(
      f"{directory!r} is a training checkpoint (optimizer state and input "
      "position, written during fit), not a model directory; pass the "
      "'model' folder of that run (<workdir>/model)"
    )
  return meta


def _parameter_in(message: str) -> str:
  """The parameter an Orbax/TensorStore error names ('params.conv1_2.kernel'
  -> 'params/conv1_2/kernel'), else 'a parameter'."""
  import re

  found = re.search(r"\b((?:params|batch_stats)(?:\.\w+)+)", message)
  if not found:
    return "a parameter"
  return "parameter " + found.group(1).replace(".", "/")


def _corrupt(directory: str, what: str, error: Exception):
  kind = type(error).__name__
  return ModelDirectoryError(
    f"model directory {directory!r} is corrupt or truncated: {what} could "
    f"not be read ({kind}); restore it from a copy or rerun the command "
    "that wrote it"
  )


def has_checkpoint(directory: str) -> bool:
  """Whether `directory` holds a finished checkpoint (never creates it)."""
  if not os.path.isdir(directory):
    return False
  ckpt = Checkpointer(directory)
  try:
    return ckpt.latest_step() is not None
  finally:
    ckpt.close()
