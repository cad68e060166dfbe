"""How each primitive ties the axes of its operands and results.

Every (value, axis) of a traced program is a node. A rule states, for one
equation, which nodes are the same channel space position by position
(`unify`: equal sizes, identity map), which positions of two nodes are the
same channel (`edge`: index arrays, for concatenation offsets, slices,
depthwise multipliers, grouped convolutions), which nodes can never lose a
position (`block`, with a reason), and which reshapes merge or split axes
(`merge`: decided once it is known which factors can be pruned). It also
records the layers that produce channels (a convolution's or dense layer's
kernel output axis) and the layers that consume them (a convolution or a
dense layer whose kernel is a parameter and which contracts the channel
axis): the consumers are the layers whose outputs ThiNet reconstructs.

Elementwise operations, broadcasts of equal sizes, transposes and
reductions over other axes keep channels; a reduction over a channel axis
(LayerNorm over channels, a softmax), a pooling window or convolution
window, an unknown primitive, the function's inputs and its outputs stop
them. Anything not understood is stopped, never guessed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from thinet_jax.depgraph.program import Eqn, Literal, Program, values

ELEMENTWISE = frozenset(
  """abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil
  clamp conj convert_element_type copy copy_p cos cosh digamma div eq erf
  erf_inv erfc exp exp2 expm1 floor ge gt igamma imag integer_pow is_finite
  le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow
  real reduce_precision rem round rsqrt select_n sign sin sinh sqrt square
  sub tan tanh xor sharding_constraint mesh_cast reshard
  shift_left shift_right_logical shift_right_arithmetic population_count
  stop_gradient bitcast_convert_type""".split()
)
REDUCTIONS = frozenset(
  "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
  "reduce_xor argmax argmin".split()
)
CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())
POOLING = frozenset(
  "reduce_window_sum reduce_window_max reduce_window_min reduce_window".split()
)
# Primitives that pass a parameter on unchanged (for naming a producer or
# consumer kernel by its leaf).
PASS_THROUGH = frozenset(
  "convert_element_type copy copy_p reduce_precision sharding_constraint "
  "mesh_cast reshard".split()
)


@dataclasses.dataclass(frozen=True)
class Merge:
  """A reshape between one axis `whole` and its `factors` (nodes with their
  strides and sizes): whole position p is factor k's position
  (p // stride_k) % size_k. At most one factor may keep prunable channels."""

  whole: int
  factors: tuple
  what: str


@dataclasses.dataclass(frozen=True)
class Site:
  """A layer that reads channels through a parameter kernel.

  eqn: equation index; kind: "conv" or "dense"; lhs: the input value and
  `lhs_axis` its channel (contracting) axis; rhs: the kernel value and
  `rhs_axis` its input axis; out: the output value.
  """

  eqn: int
  kind: str
  lhs: int
  lhs_axis: int
  rhs: int
  rhs_axis: int
  out: int


class Recorder:
  """Collects the relations the rules state; `graph.analyse` solves them."""

  def __init__(self, program: Program):
    self.program = program
    self.node_of: dict[tuple[int, int], int] = {}
    self.node_size: list[int] = []
    self.unions: list[tuple[int, int]] = []
    self.edges: list[tuple[int, np.ndarray, int, np.ndarray]] = []
    self.blocks: list[tuple[int, str]] = []
    self.weak: set[int] = set()  # axes a broadcast creates (copies)
    self.merges: list[Merge] = []
    self.producers: list[tuple[int, int, int]] = []  # (eqn, value, axis)
    self.sites: list[Site] = []
    self.grouped: list[tuple[int, int]] = []  # grouped convs' (input, axis)
    self.fixed = self._fixed_values()

  def _fixed_values(self) -> set[int]:
    """Values computed from parameters and constants only."""
    fixed = set(self.program.leaf_ids) | set(self.program.consts)
    for eqn in self.program.eqns:
      if all(isinstance(a, Literal) or a in fixed for a in eqn.inputs):
        fixed.update(eqn.outputs)
    return fixed

  def shape(self, value: int) -> tuple:
    return self.program.shapes[value]

  def node(self, value: int, axis: int) -> int:
    key = (value, axis)
    if key not in self.node_of:
      self.node_of[key] = len(self.node_size)
      self.node_size.append(self.shape(value)[axis])
    return self.node_of[key]

  def unify(self, v1: int, a1: int, v2: int, a2: int) -> None:
    if self.shape(v1)[a1] != self.shape(v2)[a2]:
      raise AssertionError((v1, a1, v2, a2))
    self.unions.append((self.node(v1, a1), self.node(v2, a2)))

  def edge(self, v1, a1, i1, v2, a2, i2) -> None:
    self.edges.append(
      (self.node(v1, a1), np.asarray(i1), self.node(v2, a2), np.asarray(i2))
    )

  def block(self, value: int, axis: int, reason: str) -> None:
    self.blocks.append((self.node(value, axis), reason))

  def block_all(self, eqn: Eqn, reason: str) -> None:
    for v in values(eqn.inputs) + list(eqn.outputs):
      for a in range(len(self.shape(v))):
        self.block(v, a, reason)


def apply_rule(r: Recorder, index: int, eqn: Eqn) -> None:
  name = eqn.name
  if name in ELEMENTWISE:
    return _elementwise(r, eqn)
  rule = RULES.get(name)
  if rule is None:
    if name in CUMULATIVE:
      return _along_axis(r, eqn, eqn.params["axis"])
    if name in REDUCTIONS:
      return _reduce(r, eqn)
    if name in POOLING:
      return _pool(r, eqn)
    return r.block_all(eqn, f"primitive '{name}' is not understood")
  return rule(r, index, eqn)


def _elementwise(r: Recorder, eqn: Eqn) -> None:
  for out in eqn.outputs:
    shape = r.shape(out)
    for v in values(eqn.inputs):
      s = r.shape(v)
      if len(s) != len(shape):
        continue  # a scalar broadcast
      for a, (n, m) in enumerate(zip(s, shape, strict=True)):
        if n == m and n > 1:
          r.unify(v, a, out, a)


def _along_axis(r: Recorder, eqn: Eqn, axis: int) -> None:
  (x,), (out,) = values(eqn.inputs), eqn.outputs
  for a in range(len(r.shape(x))):
    if a == axis:
      r.block(x, a, f"{eqn.name} runs along it")
      r.block(out, a, f"{eqn.name} runs along it")
    else:
      r.unify(x, a, out, a)


def _reduce(r: Recorder, eqn: Eqn) -> None:
  x, out = values(eqn.inputs)[0], eqn.outputs[0]
  axes = set(eqn.params["axes"])
  kept = [a for a in range(len(r.shape(x))) if a not in axes]
  for a in axes:
    r.block(x, a, f"{eqn.name} reduces over it (mixes its channels)")
  for b, a in enumerate(kept):
    r.unify(x, a, out, b)


def _pool(r: Recorder, eqn: Eqn) -> None:
  p = eqn.params
  x, out = values(eqn.inputs)[0], eqn.outputs[0]
  dilation = p.get("base_dilation") or (1,) * len(r.shape(x))
  for a in range(len(r.shape(x))):
    trivial = (
      p["window_dimensions"][a] == 1 and p["window_strides"][a] == 1
      and tuple(p["padding"][a]) == (0, 0) and dilation[a] == 1
    )  # fmt: skip
    if trivial and r.shape(x)[a] == r.shape(out)[a]:
      r.unify(x, a, out, a)
    else:
      r.block(x, a, "a pooling window runs along it")
      r.block(out, a, "a pooling window runs along it")


def _broadcast(r: Recorder, index: int, eqn: Eqn) -> None:
  (out,) = eqn.outputs
  x = values(eqn.inputs)  # empty when a literal is broadcast
  mapped = set()
  for k, d in enumerate(eqn.params["broadcast_dimensions"]):
    if x and r.shape(x[0])[k] == r.shape(out)[d] and r.shape(x[0])[k] > 1:
      r.unify(x[0], k, out, d)
      mapped.add(d)
  for d in range(len(r.shape(out))):
    if d not in mapped:  # copies: carry channels only once tied to some
      r.weak.add(r.node(out, d))


def _generated(r: Recorder, index: int, eqn: Eqn) -> None:
  """Random bits (dropout masks): a fresh array whose axes follow whatever
  they are combined with (weak), pruned with it."""
  for out in eqn.outputs:
    for d in range(len(r.shape(out))):
      r.weak.add(r.node(out, d))


def _transpose(r: Recorder, index: int, eqn: Eqn) -> None:
  (x,), (out,) = values(eqn.inputs), eqn.outputs
  for b, a in enumerate(eqn.params["permutation"]):
    r.unify(x, a, out, b)


def _squeeze(r: Recorder, index: int, eqn: Eqn) -> None:
  (x,), (out,) = values(eqn.inputs), eqn.outputs
  gone = {d % len(r.shape(x)) for d in eqn.params["dimensions"]}
  kept = [a for a in range(len(r.shape(x))) if a not in gone]
  for b, a in enumerate(kept):
    r.unify(x, a, out, b)


def _blocks_of(in_shape, out_shape):
  """Pairs (in axes, out axes) of a reshape whose sizes multiply to the
  same product, size-1 axes left out; None when they do not line up."""
  ins = [a for a, n in enumerate(in_shape) if n != 1]
  outs = [a for a, n in enumerate(out_shape) if n != 1]
  pairs, i, j = [], 0, 0
  while i < len(ins) and j < len(outs):
    a, b = [ins[i]], [outs[j]]
    pa, pb = in_shape[ins[i]], out_shape[outs[j]]
    i, j = i + 1, j + 1
    while pa != pb:
      if pa < pb and i < len(ins):
        a.append(ins[i])
        pa *= in_shape[ins[i]]
        i += 1
      elif pb < pa and j < len(outs):
        b.append(outs[j])
        pb *= out_shape[outs[j]]
        j += 1
      else:
        return None
    pairs.append((a, b))
  return pairs if i == len(ins) and j == len(outs) else None


def _reshape(r: Recorder, index: int, eqn: Eqn) -> None:
  (x,), (out,) = values(eqn.inputs), eqn.outputs
  pairs = _blocks_of(r.shape(x), r.shape(out))
  if eqn.params.get("dimensions") is not None or pairs is None:
    return r.block_all(eqn, "a reshape that reorders elements")
  for a, b in pairs:
    if len(a) == 1 and len(b) == 1:
      r.unify(x, a[0], out, b[0])
    elif len(b) == 1 or len(a) == 1:
      whole, parts = ((out, b[0]), [(x, k) for k in a]) if len(b) == 1 else (
        (x, a[0]), [(out, k) for k in b])  # fmt: skip
      sizes = [r.shape(v)[k] for v, k in parts]
      strides = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
      what = "merges" if len(b) == 1 else "splits"
      r.merges.append(
        Merge(
          r.node(*whole),
          tuple(
            (r.node(*p), s, n)
            for p, s, n in zip(parts, strides, sizes, strict=True)
          ),
          f"a reshape {what} axes of sizes {tuple(sizes)}",
        )
      )
    else:
      for v, axes in ((x, a), (out, b)):
        for k in axes:
          r.block(v, k, "a reshape regroups several axes")


def _pieces(r: Recorder, whole: int, parts: list[int], d: int) -> None:
  """`parts` laid end to end along axis d make up `whole` (concatenate,
  split): other axes are the same, axis d at each part's offset."""
  offset = 0
  for v in parts:
    n = r.shape(v)[d]
    for a in range(len(r.shape(v))):
      if a != d:
        r.unify(v, a, whole, a)
    r.edge(v, d, np.arange(n), whole, d, offset + np.arange(n))
    offset += n


def _concatenate(r: Recorder, index: int, eqn: Eqn) -> None:
  _pieces(r, eqn.outputs[0], values(eqn.inputs), eqn.params["dimension"])


def _split(r: Recorder, index: int, eqn: Eqn) -> None:
  _pieces(r, values(eqn.inputs)[0], list(eqn.outputs), eqn.params["axis"])


def _slice(r: Recorder, index: int, eqn: Eqn) -> None:
  (x,), (out,) = values(eqn.inputs), eqn.outputs
  p = eqn.params
  strides = p.get("strides") or (1,) * len(r.shape(x))
  for a, n in enumerate(r.shape(x)):
    start, limit, step = (
      p["start_indices"][a],
      p["limit_indices"][a],
      strides[a],
    )
    if start == 0 and limit == n and step == 1:
      r.unify(x, a, out, a)
    elif step == 1:
      m = limit - start
      r.edge(out, a, np.arange(m), x, a, start + np.arange(m))
    else:
      r.block(x, a, "a strided slice runs along it")
      r.block(out, a, "a strided slice runs along it")


def _pad(r: Recorder, index: int, eqn: Eqn) -> None:
  x, out = values(eqn.inputs)[0], eqn.outputs[0]
  for a, cfg in enumerate(eqn.params["padding_config"]):
    if tuple(int(c) for c in cfg) == (0, 0, 0):
      r.unify(x, a, out, a)
    else:
      r.block(x, a, "padding runs along it")
      r.block(out, a, "padding runs along it")


def leaf_of(
  program: Program, value: int, producers: dict[int, int]
) -> int | None:
  """The variable leaf a value passes on unchanged, or None."""
  leaves = set(program.leaf_ids)
  while value not in leaves:
    i = producers.get(value)
    if i is None or program.eqns[i].name not in PASS_THROUGH:
      return None
    value = values(program.eqns[i].inputs)[0]
  return value


def shift_target(program: Program, out: int, users, producers) -> tuple | None:
  """Where a per-output-channel constant added to `out` can be folded: the
  bias added to it, or the running mean subtracted from it (see
  `graph.Consumer.shift`)."""
  uses = users.get(out, [])
  if len(uses) != 1:
    return None
  eqn = program.eqns[uses[0]]
  operands = values(eqn.inputs)
  if (
    eqn.name not in ("add", "sub") or len(operands) != 2 or out not in operands
  ):
    return None
  if eqn.name == "sub" and operands[0] != out:
    return None
  other = operands[1] if operands[0] == out else operands[0]
  while other not in set(program.leaf_ids):
    i = producers.get(other)
    if i is None or program.eqns[i].name not in PASS_THROUGH | {
      "reshape",
      "broadcast_in_dim",
    }:
      return None
    other = values(program.eqns[i].inputs)[0]
  if len([n for n in program.shapes[other] if n != 1]) != 1:
    return None
  path = program.leaf_paths[program.leaf_ids.index(other)]
  return (path, 1 if eqn.name == "add" else -1)


def _dot_general(r: Recorder, index: int, eqn: Eqn) -> None:
  lhs, rhs = values(eqn.inputs)
  (out,) = eqn.outputs
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  for a, b in zip(lc, rc, strict=True):
    r.unify(lhs, a, rhs, b)
  k = 0
  for a, b in zip(lb, rb, strict=True):
    r.unify(lhs, a, rhs, b)
    r.unify(lhs, a, out, k)
    k += 1
  for v, used in ((lhs, set(lc) | set(lb)), (rhs, set(rc) | set(rb))):
    for a in range(len(r.shape(v))):
      if a not in used:
        r.unify(v, a, out, k)
        if v == rhs and rhs in r.fixed and not lb:
          r.producers.append((index, rhs, a))
        k += 1
  if rhs in r.fixed and lhs not in r.fixed and len(lc) == 1 and not lb:
    r.sites.append(Site(index, "dense", lhs, lc[0], rhs, rc[0], out))


def _conv(r: Recorder, index: int, eqn: Eqn) -> None:
  lhs, rhs = values(eqn.inputs)
  (out,) = eqn.outputs
  p = eqn.params
  ls, rs, os = p["dimension_numbers"]
  r.unify(lhs, ls[0], out, os[0])
  for v, spec in ((lhs, ls), (rhs, rs), (out, os)):
    for a in spec[2:]:
      r.block(v, a, "a convolution window runs along it")
  if p["batch_group_count"] != 1:
    return r.block_all(eqn, "a convolution with batch_group_count > 1")
  cin, cout = r.shape(lhs)[ls[1]], r.shape(out)[os[1]]
  groups = p["feature_group_count"]
  r.unify(rhs, rs[0], out, os[1])
  if rhs in r.fixed:
    r.producers.append((index, rhs, rs[0]))
  if groups == 1:
    r.unify(lhs, ls[1], rhs, rs[1])
    if lhs not in r.fixed and rhs in r.fixed:
      r.sites.append(Site(index, "conv", lhs, ls[1], rhs, rs[1], out))
    return
  per_group, outs = cin // groups, cout // groups
  if per_group == 1:  # depthwise: output o reads input channel o // outs
    r.edge(out, os[1], np.arange(cout), lhs, ls[1], np.arange(cout) // outs)
    return
  # grouped: input c is kernel row c % per_group in group c // per_group;
  # removing one channel means removing it from every group (balanced).
  r.grouped.append((lhs, ls[1]))
  r.edge(lhs, ls[1], np.arange(cin), rhs, rs[1], np.arange(cin) % per_group)
  r.edge(out, os[1], np.arange(cout), out, os[1], np.arange(cout) % outs)


RULES = {
  "broadcast_in_dim": _broadcast,
  "random_bits": _generated,
  "transpose": _transpose,
  "squeeze": _squeeze,
  "reshape": _reshape,
  "concatenate": _concatenate,
  "split": _split,
  "slice": _slice,
  "pad": _pad,
  "dot_general": _dot_general,
  "conv_general_dilated": _conv,
}
