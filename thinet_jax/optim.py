"""The optimizer, its learning-rate schedule and distillation's loss.

`optimizer(config, steps_per_epoch)` is the paper's Caffe solver in Optax:
SGD with momentum (Nesterov optional), L2 weight decay on conv and dense
kernels added to the gradient, and `schedule`: linear warm-up, then cosine,
step or constant. `Teacher` and `distillation_loss` are knowledge
distillation's (Hinton et al. 2015): loss = (1 - weight) * cross-entropy +
weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)), plus,
with `Teacher.features`, `feature_loss` of the intermediate feature maps
the two nets share (FitNets' hints, Romero et al. 2015, without adapters).
`thinet_jax.train` re-exports every name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from thinet_jax.checkpoints import Model


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
  """A fixed model to distil from during `fit`.

  Attributes:
    spec, variables: the teacher (e.g. the unpruned model); evaluated in
      inference mode, never updated.
    temperature: T, softening both distributions.
    weight: the distillation term's share of the loss, in [0, 1].
    features: weight of `feature_loss` added to the loss (0: off): the
      student's feature maps (`nets.Net.features`) held to the teacher's
      where a map of that name has the same shape in both (a pruned
      ResNet's block outputs; a VGG's unpruned layers).
  """

  spec: Model
  variables: dict[str, Any]
  temperature: float = 4.0
  weight: float = 0.5
  features: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.weight <= 1.0:
      raise ValueError(
        f"distillation weight must be in [0, 1], got {self.weight}"
      )
    if not self.temperature > 0:
      raise ValueError(
        f"distillation temperature must be > 0, got {self.temperature}"
      )
    if not self.features >= 0:
      raise ValueError(
        f"feature distillation weight must be >= 0, got {self.features}"
      )


def distillation_loss(
  student_logits: jax.Array, teacher_logits: jax.Array, temperature: float
) -> jax.Array:
  """Mean over the batch of T^2 KL(softmax(t / T) || softmax(s / T))."""
  t = teacher_logits / temperature
  log_p_teacher = jax.nn.log_softmax(t)
  log_p_student = jax.nn.log_softmax(student_logits / temperature)
  kl = jnp.sum(
    jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1
  )
  return temperature**2 * jnp.mean(kl)


def feature_loss(
  student: dict[str, jax.Array], teacher: dict[str, jax.Array]
) -> jax.Array:
  """Mean over the shared feature maps of |s - t|^2 / |t|^2 (each map's
  squared error relative to the teacher's energy, so deep and shallow maps
  weigh alike).

  Raises:
    ValueError: no map of the student has the teacher's name and shape.
  """
  names = [
    name for name, value in student.items()
    if name in teacher and teacher[name].shape == value.shape
  ]  # fmt: skip
  if not names:
    raise ValueError(
      "feature distillation found no feature map with the same name and "
      f"shape in student ({sorted(student)[:6]}...) and teacher "
      f"({sorted(teacher)[:6]}...); prune fewer layers or set the "
      "feature weight to 0"
    )
  terms = []
  for name in names:
    s = student[name].astype(jnp.float32)
    t = teacher[name].astype(jnp.float32)
    terms.append(jnp.sum((s - t) ** 2) / (jnp.sum(t**2) + 1e-12))
  return jnp.mean(jnp.stack(terms))


def schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """Learning rate per step: linear warm-up, then cosine or step decay.

  Config fields: learning_rate, num_epochs, warmup_epochs, schedule
  ("cosine" | "step" | "constant"), lr_drop_epochs, lr_drop_factor.
  """
  total = max(1, int(config.num_epochs * steps_per_epoch))
  warmup = int(config.warmup_epochs * steps_per_epoch)
  base = config.learning_rate
  if config.schedule == "cosine":
    main = optax.cosine_decay_schedule(base, max(1, total - warmup))
  elif config.schedule == "step":
    main = optax.piecewise_constant_schedule(
      base,
      {
        int(e * steps_per_epoch) - warmup: config.lr_drop_factor
        for e in config.lr_drop_epochs
      },
    )
  elif config.schedule == "constant":
    main = optax.constant_schedule(base)
  else:
    raise ValueError(
      f'schedule must be "cosine", "step" or "constant", got '
      f"{config.schedule!r}"
    )
  if warmup == 0:
    return main
  return optax.join_schedules(
    [optax.linear_schedule(0.0, base, warmup), main], [warmup]
  )


def _kernels_only(params):
  """Weight decay on conv and dense kernels, not on biases or BN params."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: path[-1].key == "kernel", params
  )


def optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
  """SGD + momentum with L2 weight decay, following `schedule`.

  The decay reaches the conv and dense kernels (the paper's Caffe solver)
  or, with `config.decay_all`, every parameter, biases and BatchNorm scales
  and shifts included (PyTorch's `SGD(weight_decay=...)` default).
  """
  decay_all = config.get("decay_all", False)
  return optax.chain(
    optax.add_decayed_weights(
      config.weight_decay, mask=None if decay_all else _kernels_only
    ),
    optax.sgd(
      schedule(config, steps_per_epoch),
      momentum=config.momentum,
      nesterov=config.nesterov,
    ),
  )
