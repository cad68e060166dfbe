"""Real (not masked) pruning: rebuild variables and spec with fewer channels.

`prune(spec, variables, group, keep, scales)` slices every leaf of a group
(paper section 3.1: "filters in layer i and channels of the next layer are
removed together"): the producer's kernel out-axis, bias, BatchNorm
scale/bias/mean/var, and the consumer's input channels, which it multiplies
by the least-squares `scales`. The returned spec has the new width, so
`models.build(spec)` applies the returned variables directly.

Removing nothing with unit scales is the identity; removing a channel whose
contribution is exactly a combination of the kept ones, with the
least-squares scales, changes no output. Both are tests. An optional
`shift` (`reconstruct.mean_shift`, centred reconstruction) is added to the
consumer's output: to its bias, or subtracted from its BatchNorm running
mean.

`gap_head(spec, variables, batches)` is the head surgery of the paper's
ThiNet-GAP (section 4.1): a VGG's flatten + fc6 .. fc8 head (and pool5)
replaced by global average pooling and one dense layer, whose weights are
fitted by least squares to the logits of the head it replaces, so the
smaller model starts close to the old one instead of from a random
classifier.

Example:

  >>> group = groups.get(spec, "conv3_1")
  >>> spec2, variables2 = surgery.prune(spec, variables, group, keep, scales)
  >>> spec3, variables3, info = surgery.gap_head(spec2, variables2, batches)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import groups as groups_lib
from thinet_jax import models
from thinet_jax.depgraph.surgery import check_keep
from thinet_jax.groups import Group
from thinet_jax.spec import POOL, ModelSpec


def prune(
  spec: ModelSpec,
  variables: dict[str, Any],
  group: Group,
  keep: Any,
  scales: Any | None = None,
  shift: Any | None = None,
) -> tuple[ModelSpec, dict[str, Any]]:
  """Removes a group's channels outside `keep`; folds `scales` into the
  consumer.

  Args:
    spec: the model's spec.
    variables: its variables ({"params", "batch_stats"?}).
    group: a group of `spec` (`groups.get(spec, name)`).
    keep: sorted unique int [n] channels to keep.
    scales: [n] multipliers of the kept channels' consumer weights (least
      squares), default ones.
    shift: [D] added to the consumer's pre-activation output (centred
      reconstruction), default none.

  Returns:
    (spec with the group at width n, variables of the new shapes). The input
    variables are not modified.
  """
  current = groups_lib.get(spec, group.name)
  if current.width != group.width:
    raise ValueError(
      f"group {group.name} was taken from a spec where it had {group.width} "
      f"channels; this spec has {current.width}: call groups.get again"
    )
  keep = check_keep(keep, group.width)
  n = keep.size
  # Scales and variables may be traced (prune under jit); keep may not.
  scales = jnp.ones(n, jnp.float32) if scales is None else jnp.asarray(scales)
  if scales.shape != (n,):
    raise ValueError(f"scales must have shape ({n},), got {scales.shape}")
  flat = flax.traverse_util.flatten_dict(
    {k: v for k, v in variables.items()}, sep="/"
  )
  missing = [leaf for leaf in group.param_leaves if leaf not in flat]
  if missing:
    raise KeyError(
      f"variables lack {missing} of group {group.name}: do they belong to "
      "this spec?"
    )
  out = dict(flat)
  for leaf in group.param_leaves[:-1]:  # Producer leaves: out axis last.
    out[leaf] = jnp.take(flat[leaf], keep, axis=-1)
  consumer = f"params/{group.consumer}/kernel"
  w = flat[consumer]
  s = scales.astype(w.dtype)
  if group.consumer_kind == "conv":  # [kh, kw, C, D]
    out[consumer] = jnp.take(w, keep, axis=2) * s[None, None, :, None]
  elif group.consumer_kind == "gap_dense":  # [C, D]
    out[consumer] = jnp.take(w, keep, axis=0) * s[:, None]
  else:  # flatten_dense: rows (h, w, c), c fastest.
    d = w.shape[-1]
    rows = w.reshape(-1, group.width, d)
    out[consumer] = (jnp.take(rows, keep, axis=1) * s[None, :, None]).reshape(
      -1, d
    )
  if shift is not None:
    _fold_shift(out, group, jnp.asarray(shift))
  new_spec = groups_lib.with_width(spec, group, n)
  return new_spec, flax.traverse_util.unflatten_dict(out, sep="/")


def _fold_shift(flat: dict[str, Any], group: Group, shift: jax.Array) -> None:
  """Adds `shift` to the consumer's output: to its bias, or (BatchNorm
  normalises y - mean) subtracted from its running mean."""
  if group.consumer_bn is not None:
    leaf, sign = f"batch_stats/{group.consumer_bn}/mean", -1.0
  else:
    leaf, sign = f"params/{group.consumer}/bias", 1.0
  if leaf not in flat:
    raise KeyError(f"cannot fold a mean shift: variables lack {leaf}")
  if shift.shape != flat[leaf].shape:
    raise ValueError(
      f"shift must have shape {flat[leaf].shape} (the consumer's outputs), "
      f"got {shift.shape}"
    )
  flat[leaf] = flat[leaf] + sign * shift.astype(flat[leaf].dtype)


def gap_spec(spec: ModelSpec) -> ModelSpec:
  """A VGG spec with its fc head (and a final pool) replaced by global
  average pooling and one dense layer (the paper's ThiNet-GAP head)."""
  if spec.family != "vgg" or spec.head != "fc":
    raise ValueError(
      "gap_head replaces the flatten + dense head of a VGG; this spec has "
      f"family={spec.family!r}, head={spec.head!r}"
    )
  layers = spec.layers[:-1] if spec.layers[-1] == POOL else spec.layers
  return dataclasses.replace(
    spec, layers=layers, head="gap", fc_widths=(), dropout=0.0
  )


def gap_head(
  spec: ModelSpec,
  variables: dict[str, Any],
  batches: Iterable[dict[str, Any]],
  ridge: float = 1e-4,
) -> tuple[ModelSpec, dict[str, Any], dict[str, float]]:
  """Replaces a VGG's fc head by global average pooling and one dense
  layer fitted by least squares to the old logits.

  With f the last conv's map (after BatchNorm and ReLU, no pool5) averaged
  over positions and z the old model's logits on the same images, the new
  classifier solves min ||[f, 1] [W; b] - z||^2 + ridge * mean(diag) *
  ||W||^2 over every image of `batches` (normal equations in float64).

  Args:
    spec, variables: a VGG with head "fc".
    batches: training batches ({"image": [B, H, W, C]}, optionally a 0/1
      "mask" [B] that drops padding records); a thousand images are
      plenty (the unknowns are (C + 1) x classes).
    ridge: relative ridge term (times the mean diagonal of the features'
      Gram), keeping the solve well posed when features are collinear.

  Returns:
    (the GAP spec, its variables, {"relative_error": the fit's residual
    sum of squares relative to the logits', "images": how many}).
  """
  new_spec = gap_spec(spec)
  params = {
    k: v for k, v in variables["params"].items() if not k.startswith("fc")
  }
  width = [w for w in new_spec.layers if w != POOL][-1]
  classes = spec.num_classes
  placeholder = {"kernel": jnp.zeros((width, classes)),
                 "bias": jnp.zeros((classes,))}  # fmt: skip
  new_vars = dict(variables, params=params | {"fc": placeholder})
  old_logits = jax.jit(models.build(spec).apply)

  @jax.jit
  def pooled(v, x):
    return models.consumer_inputs(new_spec, v, x, ["fc"])["fc"]

  gram = np.zeros((width + 1, width + 1))
  cross = np.zeros((width + 1, classes))
  total, images = 0.0, 0
  for batch in batches:
    x = jnp.asarray(batch["image"])
    z = np.asarray(old_logits(variables, x), np.float64)
    f = np.asarray(pooled(new_vars, x), np.float64)
    if not (np.isfinite(z).all() and np.isfinite(f).all()):
      raise FloatingPointError(
        "gap_head: NaN or inf in the activations or logits; check the "
        "model's variables and the input batches"
      )
    # Padded batches carry a 0/1 "mask": padding records do not count.
    m = np.asarray(batch.get("mask", np.ones(len(f))), np.float64)[:, None]
    a = np.concatenate([f, np.ones((len(f), 1))], axis=1)
    gram += a.T @ (m * a)
    cross += a.T @ (m * z)
    total += float((m * z**2).sum())
    images += int(m.sum())
  if images == 0:
    raise ValueError("gap_head needs at least one batch of images")
  reg = np.eye(width + 1) * ridge * np.mean(np.diag(gram)[:-1])
  reg[-1, -1] = 0.0  # The bias is not shrunk.
  # Least squares, not solve: a channel dead on every image (all-zero
  # feature) leaves the system singular; it gets weight 0.
  solution = np.linalg.lstsq(gram + reg, cross, rcond=None)[0]
  residual = (
    total - 2 * np.sum(solution * cross) + np.sum(solution * (gram @ solution))
  )
  dtype = variables["params"][f"fc{6 + len(spec.fc_widths)}"]["kernel"].dtype
  new_vars["params"]["fc"] = {
    "kernel": jnp.asarray(solution[:-1], dtype),
    "bias": jnp.asarray(solution[-1], dtype),
  }
  info = {"relative_error": float(residual / total), "images": images}
  return new_spec, new_vars, info
