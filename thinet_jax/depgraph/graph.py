"""The dependency graph of a traced function: its prunable channel groups.

`analyse(program)` applies every primitive's rule (`rules.py`) and solves
them in two levels: axes tied by identity (elementwise operations, a
residual add, a convolution's kernel output axis and its output) become one
class by union-find; positions tied by index maps (concatenation offsets,
slices, depthwise multipliers, flatten's strided blocks) become one
*channel* by connected components over the positions of those classes
(scipy). A channel is pruned everywhere at once: every position of every
axis that belongs to it goes.

Channels are then grouped by the layers that produce them: the channels of
one group come from the same set of producer classes (the output channels
of conv1, or the residual stream that every block of a stage adds to; in
a concatenation each source stays its own group with its offset). A group
is prunable when none of its channels is stopped (it reaches the
function's output or input, a reduction over channels, a reshape that
mixes it with another prunable axis, an unknown primitive) and some layer
reads it through a parameter kernel: its consumers, whose outputs ThiNet
reconstructs. Everything else is listed in `Graph.left_out` with why.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from thinet_jax.depgraph import rules
from thinet_jax.depgraph.program import Program, values


@dataclasses.dataclass(frozen=True)
class Member:
  """One parameter axis of a group: `index[p]` is the group channel of
  position p of axis `axis` of leaf `path`, or -1 (another group's)."""

  path: str
  axis: int
  index: np.ndarray


@dataclasses.dataclass(frozen=True)
class Consumer:
  """A layer reading a group through a parameter kernel.

  kind: "conv" or "dense"; eqn: its equation in the program; input: the
  value id of its input and `axis` that input's channel axis, whose
  position p carries group channel `index[p]` (-1: not this group's);
  kernel: the kernel leaf's path and `kernel_axis` its input axis (None
  when the kernel is computed, not a leaf); output: its output value id;
  shift: where a constant per output channel can be folded: (bias path,
  +1) when the output is added to a bias, (running mean path, -1) when a
  normalisation subtracts its mean from it, else None.
  """

  name: str
  kind: str
  eqn: int
  input: int
  axis: int
  index: np.ndarray
  kernel: str | None
  kernel_axis: int
  output: int
  shift: tuple | None = None  # (leaf path, +1 bias / -1 running mean)


@dataclasses.dataclass(frozen=True)
class Group:
  """Channels that are removed together.

  name: the first producer's layer name (e.g. "conv1", "res2a/branch2c";
  see `layer_names`), unique among the graph's groups and left-out sets;
  width: number of channels; producers: the layer names of every layer
  whose output channels these are; members: every parameter axis that
  loses them; consumers: the layers that read them; producer_kernels: the
  producers' kernel leaf paths (what `weight_sum` measures).
  """

  name: str
  width: int
  producers: tuple[str, ...]
  members: tuple[Member, ...]
  consumers: tuple[Consumer, ...]
  channels: np.ndarray  # channel index -> channel component id
  producer_kernels: tuple[str, ...] = ()

  def member(self, path: str, axis: int | None = None) -> Member:
    for m in self.members:
      if m.path == path and (axis is None or m.axis == axis):
        return m
    raise KeyError(f"{path} is not a member of group {self.name}")


@dataclasses.dataclass(frozen=True)
class LeftOut:
  """A set of channels that is not pruned, and why."""

  name: str
  width: int
  reason: str

  def __str__(self) -> str:
    return f"{self.name} ({self.width} channels): {self.reason}"


def module_path(leaf_path: str) -> str:
  """The module of a leaf: "params/block1/conv/kernel" -> "block1/conv";
  an NNX state's "block1/conv/kernel/value" -> "block1/conv"."""
  parts = leaf_path.split("/")
  if len(parts) > 2 and parts[-1] == "value":
    parts = parts[:-1]
  if len(parts) > 2 and parts[0] in ("params", "batch_stats"):
    parts = parts[1:]
  return "/".join(parts[:-1]) or leaf_path


def _leaf_name(leaf_path: str) -> str:
  """A leaf path without its collection and NNX suffix:
  "params/block1/w1" -> "block1/w1"."""
  parts = leaf_path.split("/")
  if len(parts) > 1 and parts[-1] == "value":
    parts = parts[:-1]
  if len(parts) > 1 and parts[0] in ("params", "batch_stats"):
    parts = parts[1:]
  return "/".join(parts)


def layer_names(leaf_paths: list[str], layers: set[str]) -> dict[str, str]:
  """The readable, unique name of every leaf's layer: leaf path -> name.

  A leaf's layer is its module path ("params/conv1/kernel" -> "conv1")
  when that names one layer. Where it does not, the leaf path itself is the
  name: a pytree of plain lists (a Keras model's `trainable_variables`,
  "t/0", "t/17", ... all under "t"), or a module holding two kernels. So
  two different kernels (`layers`: the producer and consumer kernels) never
  share a name, and per-layer data keyed by name never mixes layers.
  """
  by_module: dict[str, set[str]] = {}
  for p in layers:
    by_module.setdefault(module_path(p), set()).add(p)
  shared = {m for m, ps in by_module.items() if len(ps) > 1}
  names = {}
  for p in leaf_paths:
    module = module_path(p)
    indexed = p.rsplit("/", 1)[-1].isdigit()  # a list element, not a field
    names[p] = _leaf_name(p) if module in shared or indexed else module
  return names


def _unique(name: str, taken: set[str]) -> str:
  """`name`, or `name#2`, `name#3`, ... if it is taken; then taken."""
  k, unique = 1, name
  while unique in taken:
    k += 1
    unique = f"{name}#{k}"
  taken.add(unique)
  return unique


class _UnionFind:
  def __init__(self, n: int):
    self.parent = list(range(n))

  def find(self, i: int) -> int:
    parent = self.parent
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  def union(self, i: int, j: int) -> None:
    i, j = self.find(i), self.find(j)
    if i != j:
      self.parent[max(i, j)] = min(i, j)


class Graph:
  """The solved relations of a program (see module docstring).

  `groups`: the prunable groups in program order; `left_out`: what is not
  prunable and why; `channels_of(value, axis)`: the channel id of every
  position of an axis (used to run the pruned program).
  """

  def __init__(self, program: Program):
    self.program = program
    rec = rules.Recorder(program)
    for i, eqn in enumerate(program.eqns):
      rules.apply_rule(rec, i, eqn)
    for v in program.arg_ids:
      for a in range(len(program.shapes[v])):
        rec.block(v, a, "it comes from the function's input")
    for v in values(program.outputs):
      for a in range(len(program.shapes[v])):
        rec.block(v, a, "it reaches the function's output")
    self._rec = rec
    self._solve()
    self.groups, self.left_out = self._groups()

  # -- solving -------------------------------------------------------------

  def _solve(self) -> None:
    rec = self._rec
    uf = _UnionFind(len(rec.node_size))
    for i, j in rec.unions:
      uf.union(i, j)
    self._root = [uf.find(i) for i in range(len(rec.node_size))]
    roots = sorted(set(self._root))
    self._base = {}
    total = 0
    for r in roots:
      self._base[r] = total
      total += rec.node_size[r]
    self._total = total
    strong = np.zeros(total, bool)  # elements of classes not only weak
    for node in range(len(rec.node_size)):
      if node not in rec.weak:
        strong[self.elements(node)] = True
    blocked = np.full(total, -1)
    self._reasons: list[str] = []
    for node, reason in rec.blocks:
      self._block(blocked, self.elements(node), reason)
    edges = [
      (self.elements(n1)[i1], self.elements(n2)[i2])
      for n1, i1, n2, i2 in rec.edges
    ]  # fmt: skip
    pending = list(rec.merges)
    while True:
      comp, comp_reason = self._components(edges, blocked)
      carries = np.zeros(len(comp_reason), bool)
      carries[comp[strong]] = True
      carries &= comp_reason < 0
      decided, rest = [], []
      for merge in pending:
        free = [
          f for f in merge.factors if carries[comp[self.elements(f[0])]].any()
        ]
        (decided if len(free) <= 1 else rest).append((merge, free))
      if not decided and rest:  # two prunable factors: stop all of them
        decided, rest = rest, []
      if not decided:
        break
      for merge, free in decided:
        whole = self.elements(merge.whole)
        if len(free) == 1:
          node, stride, size = free[0]
          p = np.arange(len(whole))
          edges.append((whole, self.elements(node)[(p // stride) % size]))
        else:
          why = (
            f"{merge.what}, of which {len(free)} carry channels"
            if free else f"{merge.what}, none of them prunable"
          )  # fmt: skip
          self._block(blocked, whole, why)
          for node, _, _ in free:
            self._block(blocked, self.elements(node), why)
      pending = [m for m, _ in rest]
    self._comp, self._comp_reason = comp, comp_reason

  def _block(self, blocked, elements, reason: str) -> None:
    if reason not in self._reasons:
      self._reasons.append(reason)
    k = self._reasons.index(reason)
    blocked[elements] = np.where(blocked[elements] < 0, k, blocked[elements])

  def _components(self, edges, blocked):
    if edges:
      u = np.concatenate([e[0] for e in edges])
      v = np.concatenate([e[1] for e in edges])
    else:
      u = v = np.zeros(0, int)
    adj = scipy.sparse.coo_matrix(
      (np.ones(len(u), np.int8), (u, v)), shape=(self._total, self._total)
    )
    _, comp = scipy.sparse.csgraph.connected_components(adj, directed=False)
    reason = np.full(comp.max() + 1 if len(comp) else 0, -1)
    hit = blocked >= 0
    # the first reason (in recording order) of any element of a component
    order = np.argsort(-blocked[hit], kind="stable")
    reason[comp[hit][order]] = blocked[hit][order]
    return comp, reason

  def elements(self, node: int) -> np.ndarray:
    root = self._root[node]
    return self._base[root] + np.arange(self._rec.node_size[root])

  @property
  def channel_count(self) -> int:
    return len(self._comp_reason)

  def channels_of(self, value: int, axis: int) -> np.ndarray:
    """Channel component id of every position of (value, axis)."""
    key = (value, axis)
    if key not in self._rec.node_of:
      return np.full(self.program.shapes[value][axis], -1)
    return self._comp[self.elements(self._rec.node_of[key])]

  def reason_of(self, comp: int) -> str | None:
    k = self._comp_reason[comp]
    return None if k < 0 else self._reasons[k]

  # -- groups --------------------------------------------------------------

  def _groups(self):
    program, rec = self.program, self._rec
    producers = program.producers()
    users = program.users()
    path_of = dict(zip(program.leaf_ids, program.leaf_paths, strict=True))
    kernel_of = {}  # producer k or site -> its kernel's leaf path
    for k, (_, value, _) in enumerate(rec.producers):
      leaf = rules.leaf_of(program, value, producers)
      kernel_of[k] = path_of[leaf] if leaf is not None else None
    for site in rec.sites:
      leaf = rules.leaf_of(program, site.rhs, producers)
      kernel_of[site] = path_of[leaf] if leaf is not None else None
    self.layer_names = layer_names(
      program.leaf_paths, {p for p in kernel_of.values() if p is not None}
    )
    names: dict[int, list[str]] = {}  # producer class -> layer names
    kernels: dict[int, list[str]] = {}  # producer class -> kernel paths
    pairs = []  # (channel, producer class rank, producer k, position)
    for k, (eqn, value, axis) in enumerate(rec.producers):
      root = self._root[rec.node(value, axis)]
      kpath = kernel_of[k]
      name = (
        self.layer_names[kpath] if kpath is not None
        else f"{program.eqns[eqn].name}@{eqn}"
      )  # fmt: skip
      if name not in names.setdefault(root, []):
        names[root].append(name)
      if kpath is not None and kpath not in kernels.setdefault(root, []):
        kernels[root].append(kpath)
      comps = self._comp[self.elements(rec.node(value, axis))]
      rank = list(names).index(root)
      n = len(comps)
      pairs.append(
        np.stack([comps, np.full(n, rank), np.full(n, k), np.arange(n)], 1)
      )
    roots = list(names)
    groups, left_out = [], []
    if not pairs:
      return groups, left_out
    pairs = np.concatenate(pairs)
    # a channel's signature: the set of producer classes it comes from,
    # hashed as a sum of one random 64-bit word per class (wrapping)
    words = np.random.default_rng(0).integers(1, 2**63, len(roots), np.uint64)
    sig_pairs = np.unique(pairs[:, :2], axis=0)  # sorted by channel, rank
    starts = np.r_[0, np.flatnonzero(np.diff(sig_pairs[:, 0])) + 1]
    channels = sig_pairs[starts, 0]
    hashes = np.add.reduceat(words[sig_pairs[:, 1]], starts)
    # channels in order of first appearance (producer, then position)
    first = pairs[np.lexsort((pairs[:, 3], pairs[:, 2], pairs[:, 0]))]
    first = first[np.r_[0, np.flatnonzero(np.diff(first[:, 0])) + 1]]
    order = np.lexsort((first[:, 3], first[:, 2]))  # first[:, 0] == channels
    by_sig: dict[tuple, np.ndarray] = {}
    ends = np.r_[starts[1:], len(sig_pairs)]
    for h in dict.fromkeys(hashes[order].tolist()):
      at = order[hashes[order] == h]
      i = int(at[0])
      by_sig[tuple(sig_pairs[starts[i] : ends[i], 1].tolist())] = channels[at]
    group_of = np.full(len(self._comp_reason) + 1, -1)  # last: "no node"
    position = np.full(len(self._comp_reason) + 1, -1)
    candidates = []
    taken: set[str] = set()
    for sig, comps in by_sig.items():
      producer_names = tuple(n for r in sig for n in names[roots[r]])
      producer_kernels = tuple(
        p for r in sig for p in kernels.get(roots[r], [])
      )
      name = _unique(producer_names[0], taken)
      stopped = [r for r in self._comp_reason[comps] if r >= 0]
      if stopped:
        left_out.append(LeftOut(name, len(comps), self._reasons[stopped[0]]))
      elif len(comps) < 2:
        left_out.append(LeftOut(name, len(comps), "a single channel"))
      else:
        group_of[comps] = len(candidates)
        position[comps] = np.arange(len(comps))
        candidates.append((name, producer_names, producer_kernels, comps))
    members = [[] for _ in candidates]
    for leaf, path in zip(program.leaf_ids, program.leaf_paths, strict=True):
      for a in range(len(program.shapes[leaf])):
        comps = self.channels_of(leaf, a)
        for g in np.unique(group_of[comps]):
          if g >= 0:
            index = np.where(group_of[comps] == g, position[comps], -1)
            members[g].append(Member(path, a, index))
    consumers = [[] for _ in candidates]
    for site in rec.sites:
      comps = self.channels_of(site.lhs, site.lhs_axis)
      for g in np.unique(group_of[comps]):
        if g < 0:
          continue
        kpath = kernel_of[site]
        consumers[g].append(
          Consumer(
            name=(
              self.layer_names[kpath] if kpath else f"{site.kind}@{site.eqn}"
            ),
            kind=site.kind, eqn=site.eqn, input=site.lhs,
            axis=site.lhs_axis,
            index=np.where(group_of[comps] == g, position[comps], -1),
            kernel=kpath, kernel_axis=site.rhs_axis, output=site.out,
            shift=rules.shift_target(program, site.out, users, producers),
          )
        )  # fmt: skip
    for (name, producer_names, producer_kernels, comps), mem, con in zip(
      candidates, members, consumers, strict=True
    ):
      if not con:
        grouped = any(
          np.isin(self.channels_of(v, a), comps).any() for v, a in rec.grouped
        )
        left_out.append(
          LeftOut(
            name,
            len(comps),
            "no convolution or dense layer reads these channels through a "
            "parameter kernel"
            + (
              " (a grouped convolution reads them: it has no ThiNet "
              "statistics yet)" if grouped else ""
            ),
          )
        )  # fmt: skip
        continue
      groups.append(
        Group(
          name, len(comps), producer_names, tuple(mem), tuple(con), comps,
          producer_kernels,
        )
      )  # fmt: skip
    return groups, left_out

  def group(self, name: str) -> Group:
    for g in self.groups:
      if g.name == name:
        return g
    known = ", ".join(g.name for g in self.groups)
    raise KeyError(f"no prunable group {name!r}; groups: {known}")

  def describe(self) -> str:
    """One line per group and per left-out set."""
    lines = [
      f"{g.name}: {g.width} channels, producers {', '.join(g.producers)}; "
      f"consumers {', '.join(c.name for c in g.consumers)}"
      for g in self.groups
    ]
    lines += [f"left out {x}" for x in self.left_out]
    return "\n".join(lines)
