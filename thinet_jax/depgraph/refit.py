"""Full least-squares refit of the consumers' kernels (He et al. 2017).

ThiNet rescales each kept input channel of a consumer by one number
(`reconstruct.ridge_scales`, paper eq. 6). Channel pruning (He, Zhang, Sun,
ICCV 2017) refits the consumer's whole kernel instead: after surgery, every
weight of the consumer is fitted by least squares to the target output,
from the consumer's current input at every position of every statistics
image,

    W, b = argmin_W,b  sum_n |t_n - v_n W - b|^2 + ridge |W|^2

with v_n the input patch of output position n (C_in * kh * kw values for a
convolution, the input row for a dense layer), t_n the target output (the
unpruned model's, `target="original"`, or the model's before the step,
"current") and b a constant per output channel (with `centred`; folded
into the consumer's bias or its normalisation's running mean). From the
moments P = sum v v^T, Q = sum v t^T, s = sum v, r = sum t over n samples:

    centred:  W = (P - s s^T / n + ridge I)^+ (Q - s r^T / n),
              b = (r - W^T s) / n
    plain:    W = (P + ridge I)^+ Q,  b = 0

(`^+`: least squares, the minimum-norm solution when P is singular). The
relative error reported is that of the refitted output on the same rows.
The refit changes only the consumers' kernels (and shifts), so the kept
set is still the criterion's. A group's consumers are refitted one after
the other in program order, each on the inputs the earlier refits give it
(one pass over the batches per consumer). A consumer whose kernel is
computed, a grouped (depthwise) convolution, or one with more than
`MAX_FEATURES` inputs per output, or a kernel applied more than once keeps
ThiNet's scales (`refitted` lists the others).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import sharding
from thinet_jax.depgraph.checks import nonfinite_error
from thinet_jax.depgraph.graph import Consumer, Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.stats import _dense_layout, _rhs, aligned, stream
from thinet_jax.depgraph.surgery import add_shifts, flat_leaves
from thinet_jax.stats import _pads

# Inputs per output (C_in * kh * kw) above which a consumer is not refitted:
# P alone would take MAX_FEATURES^2 float64 on the host (128 MiB).
MAX_FEATURES = 4096


def refittable(model: Traced, consumer: Consumer) -> bool:
  """Whether `refit` fits this consumer's kernel (module docstring)."""
  if consumer.kernel is None:
    return False
  program = model.graph.program
  eqn = program.eqns[consumer.eqn]
  kernel_shape = program.shapes[_rhs(program, consumer)]
  if consumer.kind == "conv":
    p = eqn.params
    if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
      return False
    if len(kernel_shape) != 4 or any(d != 1 for d in p["lhs_dilation"]):
      return False
    if any(d != 1 for d in p["rhs_dilation"]):
      return False
    _, rs, _ = p["dimension_numbers"]
    features = kernel_shape[rs[1]] * kernel_shape[rs[2]] * kernel_shape[rs[3]]
  else:
    features = kernel_shape[consumer.kernel_axis]
  return features <= MAX_FEATURES


def refitted(model: Traced, group: Group) -> list[Consumer]:
  """The consumers of `group` that `refit_kernels` refits, in program
  order: the `refittable` ones applied once (a kernel applied twice feeds
  itself, which no linear least squares fits; it keeps its scales)."""
  uses: dict[str, int] = {}
  for c in group.consumers:
    uses[c.name] = uses.get(c.name, 0) + 1
  return [
    c for c in group.consumers
    if uses[c.name] == 1 and refittable(model, c)
  ]  # fmt: skip


def _conv_rows(x, kernel, t, eqn):
  """(patches [N, kh*kw*C] in HWIO row order, target [N, D]) of a conv
  consumer, every output position of every image."""
  ls, rs, os = eqn.params["dimension_numbers"]
  x = jnp.transpose(x, (ls[0], ls[2], ls[3], ls[1]))
  t = jnp.transpose(t, (os[0], os[2], os[3], os[1]))
  b, h, w, c = x.shape
  kh, kw = kernel.shape[rs[2]], kernel.shape[rs[3]]
  sh, sw = eqn.params["window_strides"]
  (pt, pb), (pl, pr) = _pads(list(eqn.params["padding"]), (h, w), (kh, kw),
                             (sh, sw))  # fmt: skip
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = t.shape[1:3]
  views = [
    xp[:, u : u + sh * (ho - 1) + 1 : sh, v : v + sw * (wo - 1) + 1 : sw]
    for u in range(kh)
    for v in range(kw)
  ]
  patches = jnp.stack(views, axis=3)  # [B, Ho, Wo, kh*kw, C]
  return patches.reshape(b * ho * wo, kh * kw * c), t.reshape(-1, t.shape[-1])


def _rows(consumer: Consumer, program, x, kernel, t):
  eqn = program.eqns[consumer.eqn]
  if consumer.kind == "conv":
    return _conv_rows(x, kernel, t, eqn)
  x, _ = _dense_layout(x, kernel, consumer, consumer.kernel_axis)
  return x, t.reshape(x.shape[0], -1)


def _batch_fn(program, plan, ref_plan, names, consumers, mesh):
  cache = plan.stats_fns
  key = ("refit", names, id(ref_plan))
  if key in cache:
    return cache[key]
  capture = [v for c in consumers for v in (c.input, _rhs(program, c))]

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def fn(flat, ref_flat, mask):
    from thinet_jax.depgraph import program as program_lib

    _, got = program_lib.evaluate(
      program, flat, capture, plan.params_of, plan.consts
    )
    _, refs = program_lib.evaluate(
      ref_plan.program, ref_flat, [c.output for c in consumers],
      ref_plan.params_of, ref_plan.consts,
    )  # fmt: skip
    out, finite = [], jnp.array(True)
    for c in consumers:
      t = aligned(refs[c.output], plan, ref_plan, c.output)
      v, t = _rows(c, program, got[c.input], got[_rhs(program, c)], t)
      w = jnp.repeat(mask, v.shape[0] // mask.shape[0])[:, None]
      vw, tw = v * w, t * w
      out.append((vw.T @ v, vw.T @ t, vw.sum(0), tw.sum(0), (tw * t).sum(),
                  w.sum()))  # fmt: skip
      finite &= jnp.all(jnp.isfinite(v)) & jnp.all(jnp.isfinite(t))
    return out, finite

  cache[key] = fn
  return fn


def moments(
  model: Traced,
  variables: Any,
  consumers: list[Consumer],
  batches: Iterable[Any],
  reference: tuple[Traced, Any],
  *,
  max_batches: int | None = None,
  progress: bool = False,
  desc: str = "refit",
) -> dict[str, list[np.ndarray]]:
  """consumer name -> [P, Q, s, r, |t|^2, n] (float64) over the batches:
  the current model's input rows v against the reference's output t."""
  mesh = sharding.data_mesh()
  names = tuple(c.name for c in consumers)
  totals: dict[str, list] = {}
  for b in stream(
    model, variables, batches, reference, mesh, max_batches=max_batches,
    progress=progress, desc=desc,
  ):  # fmt: skip
    fn = _batch_fn(b.program, b.plan, b.ref_plan, names, consumers, mesh)
    results, finite = fn(b.flat, b.ref_flat, b.mask)
    if not bool(finite):
      raise nonfinite_error(
        model, variables, reference,
        f"the refit statistics on batch {b.index}", b.args,
      )  # fmt: skip
    for c, m in zip(consumers, results, strict=True):
      acc = totals.setdefault(c.name, [0.0] * 6)
      for k, value in enumerate(m):
        acc[k] = acc[k] + np.asarray(value, np.float64)
  if not totals:
    raise ValueError("no batches to collect the refit statistics on")
  return totals


def solve(
  p, q, s, r, norm, n, *, centred: bool, ridge: float = 0.0
) -> tuple[np.ndarray, np.ndarray, float]:
  """(W [F, D], b [D], relative error) of the module docstring's problem."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  if centred:
    n_safe = max(float(n), 1.0)
    p = p - np.outer(s, s) / n_safe
    q = q - np.outer(s, r) / n_safe
  system = p + ridge * np.eye(p.shape[0])
  # P is summed in float32 per batch: directions below 1e-6 of its largest
  # eigenvalue are noise, treated as null (the minimum-norm solution).
  w = np.linalg.lstsq(system, q, rcond=1e-6)[0]
  # |t - v W - b|^2 = |t|^2 - 2 tr(W^T Q) + tr(W^T P W) - (centring) |r|^2/n
  total = float(norm) - (float(r @ r) / max(float(n), 1.0) if centred else 0)
  err = total - 2 * float(np.sum(w * q)) + float(np.sum(w * (p @ w)))
  b = (np.asarray(r) - w.T @ np.asarray(s)) / max(float(n), 1.0)
  return (
    w,
    (b if centred else np.zeros_like(b)),
    max(err, 0.0) / max(float(norm), 1e-30),
  )


def refit_kernels(
  model: Traced,
  variables: Any,
  group: Group,
  batches: Iterable[Any],
  reference: tuple[Traced, Any],
  *,
  centred: bool = True,
  ridge: float = 0.0,
  max_batches: int | None = None,
  progress: bool = False,
) -> tuple[Any, dict[str, float]]:
  """Refits the kernel of every consumer of `group` that `refitted` lists
  (module docstring) in the pruned `model`.

  Args:
    model, variables: the model after surgery (`depgraph.prune`).
    group: the group just pruned.
    batches: the statistics images (as `depgraph.collect`).
    reference: (model, variables) whose consumer outputs are the targets.
    centred: fit a constant per output channel too, folded into the
      consumer's bias or normalisation mean (it must have one).
    ridge: ridge term added to the inputs' Gram matrix P.

  Returns:
    (new variables, {consumer name: relative error of its refit output}).
  """
  program = model.graph.program
  treedef = jax.tree_util.tree_structure(variables)
  order = list(flat_leaves(variables))
  errors = {}
  # One consumer after the other, each on the inputs its predecessors'
  # refits give it (a residual stream's later blocks read the earlier ones').
  for c in refitted(model, group):
    totals = moments(
      model, variables, [c], batches, reference, max_batches=max_batches,
      progress=progress, desc=f"refit {c.name}",
    )  # fmt: skip
    w, b, errors[c.name] = solve(*totals[c.name], centred=centred, ridge=ridge)
    leaves = flat_leaves(variables)
    leaves[c.kernel] = _as_kernel(w, leaves[c.kernel], c, program)
    if centred:
      add_shifts(leaves, group, {c.name: b})
    variables = jax.tree_util.tree_unflatten(
      treedef, [leaves[k] for k in order]
    )
  return variables, errors


def _as_kernel(w: np.ndarray, old, c: Consumer, program) -> jax.Array:
  eqn = program.eqns[c.eqn]
  if c.kind == "conv":
    _, rs, _ = eqn.params["dimension_numbers"]
    perm = (rs[2], rs[3], rs[1], rs[0])
    hwio = tuple(old.shape[a] for a in perm)
    kernel = w.reshape(hwio)  # rows were (kh, kw, C): HWIO order
    return jnp.asarray(np.transpose(kernel, np.argsort(perm)), old.dtype)
  others = [d for a, d in enumerate(old.shape) if a != c.kernel_axis]
  moved = (old.shape[c.kernel_axis], *others)
  kernel = np.moveaxis(w.reshape(moved), 0, c.kernel_axis)
  return jnp.asarray(kernel, old.dtype)
