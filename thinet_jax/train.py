"""Training and evaluation with Optax, Flax Linen and Orbax; resumable.

State is data: a `TrainState` pytree (step, params, batch_stats, opt_state)
updated by a pure jitted `train_step`. The optimizer is an Optax chain built
from a config (SGD with momentum, L2 weight decay on kernels added to the
gradient as Caffe does, cosine or step schedule with linear warm-up). One
code path for any number of devices: batches are sharded over a `data` mesh
axis, state is replicated, and XLA inserts the gradient all-reduce.

A run checkpoints (Orbax `CheckpointManager`) the state, the ModelSpec as
JSON and the input iterator's position, so `fit` started again on the same
workdir continues where it stopped and ends with the same result.

Knowledge distillation (`Teacher`): a fixed model's logits, computed in the
same jitted step, soften the targets: loss = (1 - weight) * cross-entropy
+ weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) (Hinton
et al. 2015); with `Teacher.features`, also the intermediate feature maps
the two share (`feature_loss`). A pruned network distils from the network
it was pruned from.

Example:

  >>> variables, history = train.fit(
  ...     spec, variables, train_data=train_data, eval_data=eval_data,
  ...     config=config, steps_per_epoch=468, image_size=32, workdir="runs/x")
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from thinet_jax import checks, nets, sharding
from thinet_jax import progress as progress_lib
from thinet_jax.batchnorm import reestimate_batch_norm  # noqa: F401 (public)
from thinet_jax.checkpoints import (  # noqa: F401 (train's public names)
  Checkpointer,
  Model,
  ModelDirectoryError,
  SpecMismatchError,
  TrainState,
  abstract_variables,
  check_destination,
  create_state,
  has_checkpoint,
  load_model,
  model_keys,
  model_meta,
  model_of,
  save_model,
  variables_of,
)
from thinet_jax.optim import (  # noqa: F401 (train's public names)
  Teacher,
  distillation_loss,
  feature_loss,
  optimizer,
  schedule,
)


def _correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  topk = jax.lax.top_k(logits, k)[1]
  return jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)


def make_train_step(
  spec: Model,
  tx: optax.GradientTransformation,
  seed: int = 0,
  teacher: Teacher | None = None,
) -> Callable[..., tuple[TrainState, dict]]:
  """A pure step: cross-entropy, BN statistics update, dropout keyed by step.

  Args:
    spec, tx, seed: the model, the optimizer, the dropout seed.
    teacher: distil from this model (its variables are the step's third
      argument, so they are not baked into the compiled step).

  Raises:
    ValueError: feature distillation of a model without named feature maps.

  Returns:
    step(state, batch[, teacher_variables]) -> (state, {"loss",
    "accuracy"}); "loss" is the minimised loss (with distillation, the
    mixture).
  """
  net = nets.of(spec)
  base_key = jax.random.key(seed)
  teacher_net = None if teacher is None else nets.of(teacher.spec)
  hints = teacher is not None and teacher.features > 0
  if hints and (net.features is None or teacher_net.features is None):
    raise ValueError(
      f"feature distillation needs the feature maps of {net.name} and of "
      f"the teacher {teacher_net.name}; this kind of model does not name "
      "them (nets.Net.features): set the feature weight to 0"
    )

  def step(state: TrainState, batch: dict[str, jax.Array], teacher_vars=None):
    dropout_key = jax.random.fold_in(base_key, state.step)
    images = batch["image"]
    if hints:
      teacher_logits, _, teacher_maps = jax.lax.stop_gradient(
        teacher_net.features(teacher_vars, images)
      )
    elif teacher_net is not None:
      teacher_logits = jax.lax.stop_gradient(
        teacher_net.infer(teacher_vars, images)
      )

    def loss_fn(params):
      variables = {"params": params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
      if hints:
        logits, new_stats, maps = net.features(variables, images, dropout_key)
      else:
        logits, new_stats = net.train(variables, images, dropout_key)
      loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]
      ).mean()
      if teacher_net is not None:
        distill = distillation_loss(logits, teacher_logits, teacher.temperature)
        loss = (1.0 - teacher.weight) * loss + teacher.weight * distill
      if hints:
        loss = loss + teacher.features * feature_loss(maps, teacher_maps)
      return loss, (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True
    )(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = TrainState(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=state.batch_stats if new_stats is None else new_stats,
      opt_state=opt_state,
    )
    accuracy = jnp.mean(_correct(logits, batch["label"], 1))
    return new, {"loss": loss, "accuracy": accuracy}

  return step


def sharded_train_step(
  spec: Model,
  tx: optax.GradientTransformation,
  mesh,
  seed: int = 0,
  teacher: Teacher | None = None,
):
  """`make_train_step` jitted for a data-parallel mesh: state replicated
  (and donated), batch split over "data"; XLA all-reduces the gradients
  and the BatchNorm batch statistics, so the step equals one device's on
  the whole batch. Returns step(state, batch); a teacher's variables are
  replicated once and passed to every call."""
  replicated = sharding.replicated(mesh)
  if teacher is None:
    return jax.jit(
      make_train_step(spec, tx, seed),
      in_shardings=(replicated, sharding.batch_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
    )
  jitted = jax.jit(
    make_train_step(spec, tx, seed, teacher),
    in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )
  teacher_vars = sharding.replicate(teacher.variables, mesh)
  return lambda state, batch: jitted(state, batch, teacher_vars)


def make_eval_step(spec: Model):
  """Sums over a (masked) batch: loss, top-1 and top-5 correct, count."""
  net = nets.of(spec)
  k5 = min(5, net.num_classes)

  def step(variables, batch):
    logits = net.infer(variables, batch["image"])
    mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]
    )
    return {
      "loss": jnp.sum(loss * mask),
      "top1": jnp.sum(_correct(logits, batch["label"], 1) * mask),
      "top5": jnp.sum(_correct(logits, batch["label"], k5) * mask),
      "count": jnp.sum(mask),
      # Examples whose logits hold NaN or inf: `evaluate` refuses to turn
      # them into an accuracy.
      "nonfinite": jnp.sum(
        jnp.any(~jnp.isfinite(logits), axis=-1).astype(jnp.float32) * mask
      ),
    }

  return step


@functools.lru_cache(maxsize=16)
def jitted_eval_step(spec: Model):
  """`jax.jit(make_eval_step(spec))`, one per spec: evaluating the same
  model twice (after pruning, after fine-tuning) compiles once."""
  return jax.jit(make_eval_step(spec))


# The mesh helpers moved to `sharding`; these names stay for callers.
data_mesh = sharding.data_mesh
shard_batch = sharding.shard_batch


def evaluate(
  spec: Model,
  variables: dict[str, Any],
  batches: Iterable[dict[str, np.ndarray]],
  mesh=None,
  eval_step=None,
  progress: bool = False,
) -> dict[str, float]:
  """Top-1 / top-5 accuracy and mean loss over (masked) batches.

  Raises:
    checks.NonFiniteError: the logits of some example are NaN or inf (the
      message names the first parameter or layer output that is not
      finite); no accuracy is computed from such logits.
  """
  mesh = mesh or data_mesh()
  eval_step = eval_step or jitted_eval_step(spec)
  totals = dict(loss=0.0, top1=0.0, top5=0.0, count=0.0)
  it = progress_lib.bar(
    batches, total=progress_lib.length(batches), desc="eval", unit="batch",
    disable=not progress,
  )  # fmt: skip
  for batch in it:
    sums = eval_step(variables, shard_batch(batch, mesh))
    if float(sums["nonfinite"]) > 0:
      where = checks.locate_nonfinite(spec, variables, batch["image"])
      raise checks.NonFiniteError(
        f"the model's logits are not finite on {int(sums['nonfinite'])} "
        f"evaluation images; {where}"
      )
    for k in totals:
      totals[k] += float(sums[k])
  n = max(totals["count"], 1.0)
  out = {
    "loss": totals["loss"] / n,
    "accuracy": totals["top1"] / n,
    "examples": int(totals["count"]),
  }
  if nets.of(spec).num_classes > 5:
    out["top5"] = totals["top5"] / n
  return out


def fit(
  spec: Model,
  variables: dict[str, Any],
  *,
  train_data: Any,
  eval_data: Callable[[], Iterable[dict[str, np.ndarray]]] | None,
  config: ml_collections.ConfigDict,
  steps_per_epoch: int,
  image_size: int,
  workdir: str,
  seed: int = 0,
  desc: str = "train",
  progress: bool = True,
  teacher: Teacher | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Trains `variables` for `config.num_epochs` epochs; resumable.

  Args:
    spec, variables: the model to train.
    train_data: a `grain.IterDataset` of train batches that repeats forever
      (its iterator position is checkpointed).
    eval_data: a function returning a fresh iterable of eval batches, or
      None; evaluated after every `config.eval_every_epochs` epochs.
    config: learning_rate, momentum, nesterov, weight_decay, schedule,
      warmup_epochs, lr_drop_epochs, lr_drop_factor, num_epochs,
      eval_every_epochs, checkpoint_every_steps, log_every_steps.
    steps_per_epoch: train batches per epoch.
    image_size: input size (stored with checkpoints to restore shapes).
    workdir: checkpoints go to <workdir>/checkpoints, metrics (JSON lines)
      to <workdir>/metrics.jsonl. Started again on the same workdir, `fit`
      resumes from the latest checkpoint and gives the same final result.
    seed: dropout seed.
    desc: progress bar label.
    progress: show a progress bar (throughput, loss, lr).
    teacher: distil from this model (`Teacher`).

  Returns:
    (trained variables, history): history has one dict per evaluation.

  Raises:
    SpecMismatchError: the workdir's checkpoint holds another model.
  """
  os.makedirs(workdir, exist_ok=True)
  tx = optimizer(config, steps_per_epoch)
  lr = schedule(config, steps_per_epoch)
  total = int(round(config.num_epochs * steps_per_epoch))
  mesh = data_mesh()
  replicated = sharding.replicated(mesh)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  main = sharding.is_main_process()  # Only process 0 logs.
  iterator = iter(train_data)
  history: list[dict[str, Any]] = []
  if ckpt.latest_step() is not None:
    stored = model_keys(ckpt.meta())
    if stored != nets.of(spec).meta:
      raise SpecMismatchError(
        f"{ckpt.directory} holds a checkpoint of another model "
        f"({json.dumps(stored)[:300]}), not of "
        f"{json.dumps(nets.of(spec).meta)[:300]}; use a fresh --workdir or "
        "the matching config"
      )
    _, state, extra = ckpt.restore(tx)
    iterator.set_state(extra["data"])
    history = extra.get("history", [])
    if main:
      _truncate_metrics(metrics_path, int(state.step))
  else:
    state = create_state(variables, tx)
  # Copied: the step donates its state, and the caller's variables (or a
  # teacher's, or a reference model's) may share these arrays.
  state = jax.tree.map(jnp.copy, jax.device_put(state, replicated))
  train_step = sharded_train_step(spec, tx, mesh, seed, teacher)
  eval_step = jitted_eval_step(spec)
  start_step = int(state.step)
  bar = progress_lib.bar(
    total=total, initial=start_step, desc=desc, unit="step",
    disable=not (progress and main), dynamic_ncols=True,
  )  # fmt: skip
  window_start, window_images = time.perf_counter(), 0
  with open(metrics_path if main else os.devnull, "a") as log:
    for step in range(start_step, total):
      batch = next(iterator)
      state, metrics = train_step(state, shard_batch(batch, mesh))
      window_images += len(batch["label"]) * jax.process_count()
      done = step + 1
      epoch_end = done % steps_per_epoch == 0 or done == total
      if done % config.log_every_steps == 0 or epoch_end:
        elapsed = time.perf_counter() - window_start
        row = {
          "step": done,
          "epoch": done / steps_per_epoch,
          "loss": float(metrics["loss"]),
          "accuracy": float(metrics["accuracy"]),
          "lr": float(lr(step)),
          "images_per_s": window_images / max(elapsed, 1e-9),
        }
        if not np.isfinite(row["loss"]):
          where = checks.locate_nonfinite(
            spec, variables_of(state), batch["image"]
          )
          raise checks.NonFiniteError(
            f"training diverged at step {done} (loss {row['loss']}; {where});"
            " lower config.learning_rate or restart from the last checkpoint"
          )
        log.write(json.dumps(row) + "\n")
        log.flush()
        bar.set_postfix(
          loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2g}",
          img_s=f"{row['images_per_s']:.0f}",
          refresh=progress_lib.interactive(),  # A log gets a line per 30 s.
        )  # fmt: skip
        window_start, window_images = time.perf_counter(), 0
      bar.update(1)
      epoch = done // steps_per_epoch
      if (
        epoch_end
        and eval_data is not None
        and (done == total or epoch % config.eval_every_epochs == 0)
      ):
        result = evaluate(
          spec, variables_of(state), eval_data(), mesh, eval_step
        )
        result = {"step": done, "epoch": done / steps_per_epoch, **result}
        history.append(result)
        log.write(json.dumps({"eval": result}) + "\n")
        log.flush()
        bar.write(
          f"{desc} epoch {done / steps_per_epoch:.2f}: eval accuracy "
          f"{result['accuracy']:.4f}, loss {result['loss']:.4f}"
        )
      if epoch_end or done % config.checkpoint_every_steps == 0:
        extra = {"data": iterator.get_state(), "history": history}
        ckpt.save(state, spec, image_size, extra)
  bar.close()
  ckpt.wait()
  ckpt.close()
  return jax.device_get(variables_of(state)), history


def _truncate_metrics(path: str, step: int) -> None:
  """Drops metric lines past `step`: a killed run's tail is redone."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if row.get("step", row.get("eval", {}).get("step", 0)) <= step:
        kept.append(line)
  with open(path, "w") as f:
    f.writelines(kept)
