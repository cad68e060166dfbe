"""Generic statistics: the Gram matrices of a group's consumers, captured by
evaluating the traced computation.

For every consumer k of a group (a convolution or dense layer reading the
group's channels through a parameter kernel) one jitted evaluation of the
traced program captures its input X_k and kernel K_k, and the Gram matrix
of the per-*position* contributions along its input axis is computed with
the library's kernels (`stats.conv_gram` for convolutions, any padding,
stride and layout; `stats.dense_gram` for dense layers, also after a
flatten, where a channel owns a strided block of rows). Positions are then
summed per group channel, `G_k = M^T G_pos M` with M the one-hot map
position -> channel: exact, since a channel's contribution is the sum of
its positions'. Positions of other groups (a concatenated input) are left
out: they are not changed by this group.

A group with several consumers (a residual stream read by every block, a
channel read by two layers) is fitted with one kept set S and one scale
vector w_k per consumer (each folds into its own kernel). The objective is
the sum of the consumers' relative errors,

    E(S) = sum_k |t_k - Xhat_k,S w_k|^2 / |t_k|^2,

so each consumer weighs the same whatever its output energy; greedy
selection runs on the combined problem `combine(...)` =
`(sum_k G_k / |t_k|^2, sum_k cross_k / |t_k|^2, K)`, and the least squares
of each consumer is solved from its own G_k (`reconstruct.ridge_scales`).
One consumer gives back the paper's rule exactly.

Statistics add up over batches on the host in float64; batches are split
over the devices of the data mesh (`sharding.data_mesh`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import progress as progress_lib
from thinet_jax import sharding
from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph.checks import (
  check_group,
  check_variables,
  nonfinite_error,
)
from thinet_jax.depgraph.graph import Consumer, Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.stats import MODES, GroupStats, Target, conv_gram, dense_gram

# Dense consumers up to this many input positions use the closed form over
# positions; larger ones must be a strided (flatten) layout.
DENSE_POSITIONS = 8192


def batch_args(batch: Any) -> tuple[tuple, np.ndarray | None]:
  """A batch as the model's arguments and its 0/1 mask: a dict with
  "image" (and "mask"), a tuple of arguments, or one array."""
  if isinstance(batch, dict):
    image = np.asarray(batch["image"])
    mask = batch.get("mask")
    return (image,), None if mask is None else np.asarray(mask, np.float32)
  if isinstance(batch, (tuple, list)):
    return tuple(batch), None
  return (batch,), None


def _to_nhwc(x, kernel, eqn):
  ls, rs, os = eqn.params["dimension_numbers"]
  if len(ls) != 4:
    raise ValueError("only 2-D convolutions can be consumers (statistics)")
  if any(d != 1 for d in eqn.params["lhs_dilation"]) or any(
    d != 1 for d in eqn.params["rhs_dilation"]
  ):
    raise ValueError("dilated convolutions are not supported as consumers")
  x = jnp.transpose(x, (ls[0], ls[2], ls[3], ls[1]))
  kernel = jnp.transpose(kernel, (rs[2], rs[3], rs[1], rs[0]))
  return x, kernel


def _dense_layout(x, kernel, consumer: Consumer, rhs_axis: int):
  x = jnp.moveaxis(x, consumer.axis, -1)
  x = x.reshape(-1, x.shape[-1])
  kernel = jnp.moveaxis(kernel, rhs_axis, 0)
  return x, kernel.reshape(kernel.shape[0], -1)


def _strided(index: np.ndarray) -> int | None:
  """The block length c when index[p] == index[p % c] (a flatten), else
  None."""
  for c in range(1, len(index) + 1):
    if len(index) % c == 0 and np.all(index.reshape(-1, c) == index[:c]):
      return c
  return None


def flatten_layout(index: np.ndarray) -> tuple[np.ndarray, int] | None:
  """(order, c): the positions of a flattened input reordered by `order`
  repeat one block of c channels, `index[order][p] == index[order][p % c]`;
  None when no order does.

  A channels-last flatten (Flax's `x.reshape(n, -1)` of NHWC) is such a
  layout as it is; a channels-first one (PyTorch-ported models:
  `x.transpose(0, 3, 1, 2).reshape(n, -1)`, a channel's positions
  contiguous) becomes one when each channel's k-th position is taken in
  turn.
  """
  as_is = _strided(index)  # the whole index when nothing repeats
  if as_is is not None and as_is < len(index):
    return np.arange(len(index)), as_is
  _, first, inverse, counts = np.unique(
    index, return_index=True, return_inverse=True, return_counts=True
  )
  if counts.min() == counts.max():
    by_value = np.argsort(inverse, kind="stable")
    occurrence = np.empty(len(index), int)
    occurrence[by_value] = np.arange(len(index)) % counts[0]
    first_rank = np.argsort(np.argsort(first))  # values by first appearance
    order = np.lexsort((first_rank[inverse], occurrence))
    block = _strided(index[order])
    if block is not None and block < len(index):
      return order, block
  return None if as_is is None else (np.arange(len(index)), as_is)


def used_index(
  consumer: Consumer, input_shape, index: np.ndarray
) -> np.ndarray:
  """The position -> channel map of `position_moments`' rows: every input
  position, or one flatten block of a large dense input."""
  if consumer.kind == "dense" and input_shape[consumer.axis] > DENSE_POSITIONS:
    order, block = flatten_layout(index)
    return index[order][:block]
  return index


def position_moments(
  consumer: Consumer,
  eqn,
  x,
  kernel,
  index,
  mode,
  key,
  samples_per_image,
  mask,
  target,
):
  """(gram, count, sums, output_counts) over the consumer's input positions
  (or one flatten block, `used_index`)."""
  common = dict(
    mode=mode,
    key=key,
    samples_per_image=samples_per_image,
    mask=mask,
    sums=True,
    target=target,
  )
  if consumer.kind == "conv":
    x, kernel = _to_nhwc(x, kernel, eqn)
    if target is not None:
      os = eqn.params["dimension_numbers"][2]
      common["target"] = jnp.transpose(target, (os[0], os[2], os[3], os[1]))
    return conv_gram(
      x,
      kernel,
      eqn.params["window_strides"],
      list(eqn.params["padding"]),
      **common,
    )
  x, kernel = _dense_layout(x, kernel, consumer, consumer.kernel_axis)
  if mask is not None and x.shape[0] != mask.shape[0]:
    # a dense layer applied at every position: rows are (batch, ...)
    if x.shape[0] % mask.shape[0]:
      raise ValueError(
        f"dense consumer {consumer.name}: {x.shape[0]} rows do not split "
        f"over a batch of {mask.shape[0]}"
      )
    common["mask"] = jnp.repeat(mask, x.shape[0] // mask.shape[0])
  if target is not None:  # dot_general's output: lhs free dims, rhs free dims
    common["target"] = target.reshape(x.shape[0], -1)
  if x.shape[-1] <= DENSE_POSITIONS:
    return dense_gram(x[:, None, None, :], kernel, "gap", **common)
  layout = flatten_layout(index)
  if layout is None or layout[1] > DENSE_POSITIONS:
    raise ValueError(
      f"dense consumer {consumer.name} reads {x.shape[-1]} positions without "
      "a flatten layout (each channel's positions in the same pattern)"
    )
  order, block = layout
  if np.any(order != np.arange(len(order))):
    x, kernel = x[:, order], kernel[order]
  s = x.shape[-1] // block
  return dense_gram(x.reshape(-1, s, 1, block), kernel, "flatten", **common)


def _project(moments, index: np.ndarray, width: int, has_target: bool):
  gram, count, sums, output_counts = (
    np.asarray(m, np.float64) for m in moments
  )
  p = len(index)
  m = np.zeros((p + has_target, width + has_target))
  hit = index >= 0
  m[np.flatnonzero(hit), index[hit]] = 1.0
  if has_target:
    m[p, width] = 1.0
  return m.T @ gram @ m, float(count), m.T @ sums, output_counts


class Batch(NamedTuple):
  """One batch as the jitted statistics read it (`stream`)."""

  index: int
  args: tuple
  program: Any
  plan: Any
  ref_plan: Any  # None without a reference
  flat: list  # the variables' leaves, then the batch's arrays (sharded)
  ref_flat: list | None  # the reference's leaves, then the same arrays
  mask: jax.Array  # [B] 0/1, sharded


def stream(
  model: Traced,
  variables: Any,
  batches: Iterable[Any],
  reference: tuple[Traced, Any] | None,
  mesh,
  *,
  max_batches: int | None,
  progress: bool,
  desc: str,
):
  """Yields every batch (up to `max_batches`) as a `Batch`: the model's
  pruned program and plan at its shapes (and the reference's), and the
  leaves a jitted evaluation of both reads, the arrays split over `mesh`."""
  it = enumerate(batches)
  if progress:
    it = progress_lib.bar(
      it, total=progress_lib.length(batches, max_batches), desc=desc,
      unit="batch",
    )  # fmt: skip
  for i, batch in it:
    if max_batches is not None and i >= max_batches:
      break
    args, mask = batch_args(batch)
    n = len(np.asarray(args[0]))
    mask = np.ones(n, np.float32) if mask is None else mask
    program, plan = model.plan_for(args)
    ref_plan = None if reference is None else reference[0].plan_for(args)[1]
    arrays = {
      f"arg{j}": a for j, a in enumerate(jax.tree_util.tree_leaves(args))
    }
    sharded = sharding.shard_batch({**arrays, "mask": mask}, mesh)
    arg_leaves = [sharded[k] for k in arrays]
    flat = jax.tree_util.tree_leaves(variables) + arg_leaves
    ref_flat = (
      None if reference is None
      else jax.tree_util.tree_leaves(reference[1]) + arg_leaves
    )  # fmt: skip
    yield Batch(i, args, program, plan, ref_plan, flat, ref_flat,
                sharded["mask"])  # fmt: skip


def collect(
  model: Traced,
  variables: Any,
  group: Group,
  batches: Iterable[Any],
  *,
  mode: str = "exhaustive",
  key: jax.Array | None = None,
  samples_per_image: int = 10,
  max_batches: int | None = None,
  progress: bool = False,
  reference: tuple[Traced, Any] | None = None,
) -> dict[str, GroupStats]:
  """Statistics of every consumer of `group`: consumer name -> GroupStats.

  Args:
    model, variables: the current (possibly pruned) traced model.
    group: one of `model.groups`.
    batches: the model's inputs (see `batch_args`).
    mode: "exhaustive" or "sampled" (the paper's; conv and dense
      consumers).
    key: PRNG key of the sampled mode (folded with the batch index).
    samples_per_image: (position, output channel) samples per image in
      the sampled mode (the paper's 10).
    max_batches: stop after this many batches; progress: a progress bar.
    reference: (model, variables) of the unpruned model: its consumers'
      outputs at the same samples become the targets (`GroupStats.cross`
      and friends) minus the part this group does not change.

  Returns:
    {consumer name: GroupStats} over the group's current channels (all of
    them unless it was pruned before), in the group's consumer order; zero
    fractions are of the consumer's input, per channel. A layer applied
    more than once (shared weights) is one consumer: its applications'
    statistics add up, so one scale vector fits all of them.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "sampled" and key is None:
    raise ValueError("mode='sampled' needs a PRNG key: key=jax.random.key(0)")
  check_group(model, group)
  check_variables(model, variables)
  if reference is not None:
    check_variables(*reference)
  mesh = sharding.data_mesh()
  has_target = reference is not None
  totals: dict[str, list] = {}
  # The group's current channels (all, unless it was pruned before).
  alive = model.current(group)
  width = int(alive.sum())
  renumber = np.where(alive, np.cumsum(alive) - 1, -1)
  renumber = np.append(renumber, -1)  # index -1 stays -1
  zeros = {c.name: np.zeros(width) for c in group.consumers}
  positions = dict.fromkeys(zeros, 0.0)
  images = 0
  batches_in = stream(
    model, variables, batches, reference, mesh, max_batches=max_batches,
    progress=progress, desc=f"statistics {group.name}",
  )  # fmt: skip
  for b in batches_in:
    i, args, program, plan = b.index, b.args, b.program, b.plan
    _check_program(model, program)
    indices = [
      renumber[c.index[plan.kept(c.input, c.axis)]] for c in group.consumers
    ]
    fn = _batch_fn(
      program,
      plan,
      b.ref_plan,
      group,
      tuple(map(tuple, indices)),
      mode,
      samples_per_image,
      has_target,
      mesh,
    )
    batch_key = None if key is None else jax.random.fold_in(key, i)
    results, finite, n_images = fn(b.flat, b.ref_flat, b.mask, batch_key)
    if not bool(finite):
      raise nonfinite_error(
        model, variables, reference,
        f"the statistics of group {group.name} on batch {i}", args,
      )  # fmt: skip
    for c, index, (moments, z, per_pos) in zip(
      group.consumers, indices, results, strict=True
    ):
      used = used_index(c, program.shapes[c.input], index)
      g, cnt, s, n_d = _project(moments, used, width, has_target)
      acc = totals.setdefault(c.name, [0, 0.0, 0, 0])
      acc[0] = acc[0] + g
      acc[1] += cnt
      acc[2] = acc[2] + s
      acc[3] = acc[3] + n_d
      hit = index >= 0
      np.add.at(zeros[c.name], index[hit], np.asarray(z, np.float64)[hit])
      positions[c.name] += float(per_pos)
    images += int(n_images)  # the global batch's, over every process
  if images == 0:
    raise ValueError(f"no batches to collect statistics for {group.name}")
  out = {}
  w = width
  for c, index in zip(group.consumers, indices, strict=True):
    g, cnt, s, n_d = totals[c.name]
    per_channel = np.bincount(index[index >= 0], minlength=w)
    zf = zeros[c.name] / np.maximum(positions[c.name] * per_channel, 1)
    st = GroupStats(g[:w, :w], int(round(cnt)), zf, images, s[:w], n_d)
    if has_target:
      st = st._replace(
        cross=g[:w, w], target_norm=float(g[w, w]), target_sums=s[w]
      )
    out[c.name] = st
  return out


def _check_program(model: Traced, program) -> None:
  base = model.graph.program
  if len(program.eqns) != len(base.eqns) or any(
    a.name != b.name for a, b in zip(program.eqns, base.eqns, strict=True)
  ):
    raise ValueError(
      "the model traces to a different computation at this batch shape; "
      "statistics need the same program (trace with this batch shape)"
    )


def aligned(value, plan, ref_plan, v: int):
  """The reference's value `v` at the student's kept positions (output
  channels pruned since): both plans' kept masks are in the unpruned
  model's coordinates."""
  for a in range(value.ndim):
    mine, theirs = plan.kept(v, a), ref_plan.kept(v, a)
    if not (mine[theirs].all() and mine.sum() == theirs.sum()):
      value = jnp.take(value, np.flatnonzero(mine[theirs]), axis=a)
  return value


def _batch_fn(
  program,
  plan,
  ref_plan,
  group,
  indices,
  mode,
  samples_per_image,
  has_target,
  mesh,
):
  cache = plan.stats_fns
  key = (group.name, indices, mode, samples_per_image, has_target, id(ref_plan))
  if key in cache:
    return cache[key]
  consumers = group.consumers
  capture = [v for c in consumers for v in (c.input, _rhs(program, c))]
  ref_capture = [c.output for c in consumers]

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def fn(flat, ref_flat, mask, batch_key):
    _, got = program_lib.evaluate(
      program, flat, capture, plan.params_of, plan.consts
    )
    refs = None
    if has_target:
      _, refs = program_lib.evaluate(
        ref_plan.program,
        ref_flat,
        ref_capture,
        ref_plan.params_of,
        ref_plan.consts,
      )
    finite = jnp.array(True)
    results = []
    for k, (c, index) in enumerate(zip(consumers, indices, strict=True)):
      index = np.asarray(index)
      x, kernel = got[c.input], got[_rhs(program, c)]
      eqn = program.eqns[c.eqn]
      target = None
      if has_target:
        target = aligned(refs[c.output], plan, ref_plan, c.output)
        rest = index < 0
        if rest.any():  # the part of the output this group does not change
          shape = [1] * x.ndim
          shape[c.axis] = len(index)
          kept_rest = x * jnp.asarray(rest.reshape(shape), x.dtype)
          target = target - eqn.primitive.bind(
            kept_rest, kernel, **plan.params_of(c.eqn, eqn, None)
          )
      sub_key = (
        batch_key
        if batch_key is None or k == 0
        else jax.random.fold_in(batch_key, k)
      )
      moments = position_moments(
        c, eqn, x, kernel, index, mode, sub_key, samples_per_image, mask, target
      )
      finite &= jnp.all(jnp.isfinite(moments[0][0])) & jnp.all(jnp.isfinite(x))
      zero = jnp.moveaxis(x == 0, c.axis, -1).astype(jnp.float32)
      zero = zero.reshape(-1, zero.shape[-1])
      results.append((moments, jnp.sum(zero, axis=0), zero.shape[0]))
    return results, finite, jnp.sum(mask)

  cache[key] = fn
  return fn


def _rhs(program, consumer: Consumer) -> int:
  return program_lib.values(program.eqns[consumer.eqn].inputs)[1]


def combine(
  per_consumer: dict[str, GroupStats], centred: bool = False
) -> Target:
  """The combined least-squares problem of a group's consumers (module
  docstring): sum_k of each consumer's `target(centred)` divided by its
  target energy. Its relative error (`reconstruct.relative_error` with
  this cross and norm) is the mean-free sum of the consumers' errors."""
  gram = cross = 0.0
  norm = 0.0
  for st in per_consumer.values():
    t = st.target(centred)
    scale = 1.0 / t.norm if t.norm > 0 else 0.0
    gram = gram + t.gram * scale
    cross = cross + t.cross * scale
    norm += t.norm * scale
  return Target(np.asarray(gram), np.asarray(cross), float(norm))
