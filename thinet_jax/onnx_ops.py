"""ONNX nodes for the primitives of a traced program (`onnx_export`).

`Writer` walks the per-image part of a program: every equation that
depends on the images becomes one or a few ONNX nodes (a table for the
elementwise ops, a method `_<primitive>` for the rest); every value it
reads that does not depend on the images is computed once (the program
evaluated on the variables) and stored as an initializer, named after
the variable it comes from. A convolution absorbs the per-channel affine
chain after it (its bias, an inference-mode BatchNorm) into its kernel
and bias.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph.program import Eqn, Literal, Program


class OnnxExportError(ValueError):
  """The traced computation holds something ONNX export cannot write."""


UNARY = {
  "neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh",
  "logistic": "Sigmoid", "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign",
  "erf": "Erf", "floor": "Floor", "ceil": "Ceil", "not": "Not",
  "copy": "Identity", "copy_p": "Identity", "reduce_precision": "Identity",
  "sharding_constraint": "Identity",
  "sin": "Sin", "cos": "Cos",
}  # fmt: skip
BINARY = {
  "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max",
  "min": "Min", "pow": "Pow", "gt": "Greater", "lt": "Less",
  "ge": "GreaterOrEqual", "le": "LessOrEqual", "eq": "Equal", "and": "And",
  "or": "Or",
}  # fmt: skip
REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax",
          "reduce_min": "ReduceMin"}  # fmt: skip


def onnx_type(dtype) -> int:
  from onnx import helper

  return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class Writer:
  """Nodes and initializers of one program's per-image part."""

  def __init__(self, program: Program, variables, batch_dims, batch: int):
    self.p = program
    self.batch_dims = batch_dims
    self.batch = batch
    self.nodes: list = []
    self.inits: list = []
    self.names: dict[int, str] = {}
    # Values that depend on the images; the rest is folded to constants.
    dep = set(program.arg_ids)
    for e in program.eqns:
      if any(a in dep for a in program_lib.values(e.inputs)):
        dep.update(e.outputs)
    self.dep = dep
    reads = [a for e in program.eqns if self.dependent(e) for a in e.inputs]
    reads += list(program.outputs)
    needed = {a for a in program_lib.values(reads) if a not in dep}
    leaves = jax.tree.leaves(variables)
    image = jnp.zeros(program.shapes[program.arg_ids[0]], jnp.float32)
    _, folded = program_lib.evaluate(program, [*leaves, image], capture=needed)
    self.folded = {v: np.asarray(x) for v, x in folded.items()}
    for v in self.folded:
      if v in batch_dims:
        raise OnnxExportError(
          "a value computed without the images has a batch-sized axis, so "
          "the batch cannot be symbolic: pass batch_size=N"
        )
    self.source = _leaf_sources(program)
    self.users = program.users()
    self.absorbed: set[int] = set()  # equations folded into a convolution
    self.used: set[str] = set()
    self.count = 0

  def dependent(self, eqn: Eqn) -> bool:
    return eqn.outputs[0] in self.dep

  # -- names, constants, nodes --------------------------------------------

  def const(self, value, name: str | None = None) -> str:
    from onnx import numpy_helper

    self.count += 1
    name = f"{name}:{self.count}" if name in self.used else name
    name = name or f"const_{self.count}"
    self.used.add(name)
    self.inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name

  def ref(self, atom, dtype=None) -> str:
    """The ONNX name of a value id or a literal (cast to `dtype`)."""
    if isinstance(atom, Literal):
      return self.const(np.asarray(atom.value, dtype))
    if atom not in self.names:
      self.names[atom] = self.const(self.folded[atom], self.source.get(atom))
    return self.names[atom]

  def node(self, kind: str, inputs, name: str, n_out: int = 1, **attrs):
    """A node named `name` + `kind` ("conv1_1/Conv"); its output names."""
    from onnx import helper

    self.count += 1
    name = f"{name}{kind}"
    name = f"{name}_{self.count}" if name in self.used else name
    self.used.add(name)
    outs = [f"{name}:{k}" for k in range(n_out)]
    self.nodes.append(helper.make_node(kind, inputs, outs, name, **attrs))
    return outs[0] if n_out == 1 else outs

  def info(self, name: str, atom):
    from onnx import helper

    shape = self.p.shapes[atom] if not isinstance(atom, Literal) else ()
    dims = self.batch_dims.get(atom, set())
    return helper.make_tensor_value_info(
      name, onnx_type(self.p.dtypes[atom]),
      ["batch" if a in dims else n for a, n in enumerate(shape)],
    )  # fmt: skip

  def shape(self, v: int) -> list[int]:
    """v's shape as an ONNX Reshape target: -1 on the batch axis."""
    dims = self.batch_dims.get(v, set())
    if len(dims) > 1:
      raise OnnxExportError(
        "a reshape with two batch-sized axes: pass batch_size=N"
      )
    return [-1 if a in dims else n for a, n in enumerate(self.p.shapes[v])]

  def ints(self, values) -> str:
    return self.const(np.asarray(values, np.int64))

  # -- translation ----------------------------------------------------------

  def translate(self, i: int, eqn: Eqn) -> None:
    name = eqn.name
    out = eqn.outputs[0]
    dtype = self.p.dtypes[out]
    ins = program_lib.values(eqn.inputs)
    ref_dtype = self.p.dtypes[ins[0]] if ins else dtype
    args = [self.ref(a, ref_dtype) for a in eqn.inputs]
    label = self._layer(eqn)
    method = getattr(self, f"_{name}", None)
    if name in UNARY:
      y = self.node(UNARY[name], args, label)
    elif name == "max" and _is_zero(eqn.inputs[1]):
      y = self.node("Relu", args[:1], label)
    elif name in BINARY:
      y = self.node(BINARY[name], args, label)
    elif name == "ne":
      y = self.node("Not", [self.node("Equal", args, label)], label)
    elif method is not None:
      y = method(eqn, args, label)
    else:
      raise OnnxExportError(
        f"no ONNX translation of the primitive {name!r} (equation {i} of "
        "the traced model); export the model with jax.export instead, or "
        "rewrite that part with common layers"
      )
    if isinstance(y, list):
      for v, name_ in zip(eqn.outputs, y, strict=True):
        self.names[v] = name_
    else:
      self.names[out] = y

  def _layer(self, eqn: Eqn) -> str:
    """ "conv1_1/" for an equation applying a layer's parameter."""
    for a in program_lib.values(eqn.inputs):
      path = self.source.get(a)
      if path is not None and a not in self.dep:
        parts = path.split("/")[1:-1] if "/" in path else []
        return "/".join(parts) + "/" if parts else ""
    return ""

  def _rsqrt(self, eqn, args, label):
    return self.node("Reciprocal", [self.node("Sqrt", args, label)], label)

  def _square(self, eqn, args, label):
    return self.node("Mul", [args[0], args[0]], label)

  def _integer_pow(self, eqn, args, label):
    dtype = self.p.dtypes[eqn.outputs[0]]
    y = self.const(np.asarray(eqn.params["y"], dtype))
    return self.node("Pow", [args[0], y], label)

  def _log1p(self, eqn, args, label):
    one = self.const(np.asarray(1, self.p.dtypes[eqn.outputs[0]]))
    return self.node("Log", [self.node("Add", [args[0], one], label)], label)

  def _convert_element_type(self, eqn, args, label):
    to = onnx_type(eqn.params["new_dtype"])
    return self.node("Cast", args, label, to=to)

  def _select_n(self, eqn, args, label):
    if len(args) != 3:
      raise OnnxExportError("select_n with more than two cases")
    pred = program_lib.values(eqn.inputs[:1])
    if pred and self.p.dtypes[pred[0]] != np.bool_:
      raise OnnxExportError("select_n on an integer index")
    return self.node("Where", [args[0], args[2], args[1]], label)

  def _clamp(self, eqn, args, label):
    lo, x, hi = args
    return self.node("Max", [self.node("Min", [x, hi], label), lo], label)

  def _broadcast_in_dim(self, eqn, args, label):
    out = eqn.outputs[0]
    (src,) = program_lib.values(eqn.inputs)
    shape = list(eqn.params["shape"])
    mid = [1] * len(shape)
    batch = set()
    for k, d in enumerate(eqn.params["broadcast_dimensions"]):
      if k in self.batch_dims.get(src, set()):
        mid[d] = -1
        batch.add(d)
      else:
        mid[d] = shape[d]
    if not self.batch_dims.get(out, set()) <= batch:
      raise OnnxExportError(
        "a broadcast creates a batch-sized axis: pass batch_size=N"
      )
    x = self.node("Reshape", [args[0], self.ints(mid)], label)
    target = [1 if a in self.batch_dims.get(out, set()) else n
              for a, n in enumerate(shape)]  # fmt: skip
    return self.node("Expand", [x, self.ints(target)], label)

  def _reshape(self, eqn, args, label):
    target = self.ints(self.shape(eqn.outputs[0]))
    return self.node("Reshape", [args[0], target], label)

  _squeeze = _reshape
  _expand_dims = _reshape

  def _transpose(self, eqn, args, label):
    return self.node("Transpose", args, label,
                     perm=list(eqn.params["permutation"]))  # fmt: skip

  def _concatenate(self, eqn, args, label):
    return self.node("Concat", args, label, axis=eqn.params["dimension"])

  def _split(self, eqn, args, label):
    sizes = self.ints(eqn.params["sizes"])
    n_out, axis = len(eqn.outputs), eqn.params["axis"]
    return self.node("Split", [args[0], sizes], label, n_out=n_out, axis=axis)

  def _pad(self, eqn, args, label):
    config = eqn.params["padding_config"]
    if any(lo < 0 or hi < 0 or mid for lo, hi, mid in config):
      raise OnnxExportError("pad with negative or interior padding")
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    return self.node("Pad", [args[0], self.ints(pads), args[1]], label)

  def _slice(self, eqn, args, label):
    batch = self.batch_dims.get(eqn.outputs[0], set())
    starts = list(eqn.params["start_indices"])
    ends = [
      np.iinfo(np.int64).max if a in batch else e
      for a, e in enumerate(eqn.params["limit_indices"])
    ]
    steps = list(eqn.params["strides"] or [1] * len(starts))
    return self.node(
      "Slice", [args[0], self.ints(starts), self.ints(ends),
                self.ints(range(len(starts))), self.ints(steps)], label,
    )  # fmt: skip

  def _reduce(self, eqn, args, label):
    axes = list(eqn.params["axes"])
    kind = REDUCE[eqn.name]
    if kind == "ReduceSum":
      return self.node(kind, [args[0], self.ints(axes)], label, keepdims=0)
    return self.node(kind, args, label, axes=axes, keepdims=0)

  _reduce_sum = _reduce_max = _reduce_min = _reduce

  def _argmax(self, eqn, args, label):
    (axis,) = eqn.params["axes"]
    y = self.node("ArgMax", args, label, axis=axis, keepdims=0)
    return self.node("Cast", [y], label,
                     to=onnx_type(eqn.params["index_dtype"]))  # fmt: skip

  def _dot_general(self, eqn, args, label):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    a, b = (self.p.shapes[v] if not isinstance(v, Literal) else ()
            for v in eqn.inputs)  # fmt: skip
    if not lb and tuple(lc) == (len(a) - 1,) and len(b) == 2 and rc == (0,):
      y = self.node("MatMul", args, label)
    else:
      letters = iter("abcdefghijklmnopqrstuvwxyz")
      lhs = [next(letters) for _ in a]
      rhs = [next(letters) for _ in b]
      for i, j in zip(list(lc) + list(lb), list(rc) + list(rb), strict=True):
        rhs[j] = lhs[i]
      out = [lhs[i] for i in lb]
      out += [lhs[i] for i in range(len(a)) if i not in lc and i not in lb]
      out += [rhs[j] for j in range(len(b)) if j not in rc and j not in rb]
      spec = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
      y = self.node("Einsum", args, label, equation=spec)
    return self._cast_to_output(eqn, y, label)

  def _cast_to_output(self, eqn, y, label):
    ins = program_lib.values(eqn.inputs)
    out_dtype = self.p.dtypes[eqn.outputs[0]]
    if ins and self.p.dtypes[ins[0]] != out_dtype:
      return self.node("Cast", [y], label, to=onnx_type(out_dtype))
    return y

  def _conv_general_dilated(self, eqn, args, label):
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
      raise OnnxExportError(
        "a transposed or batch-grouped convolution (lhs_dilation "
        f"{p['lhs_dilation']}, batch_group_count {p['batch_group_count']})"
      )
    pads = p["padding"]
    if any(lo < 0 or hi < 0 for lo, hi in pads):
      raise OnnxExportError(f"a convolution with negative padding {pads}")
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    x = self.node("Transpose", [args[0]], label, perm=list(lhs_spec))
    kernel = eqn.inputs[1]
    inputs = [x]
    if not isinstance(kernel, Literal) and kernel not in self.dep:
      k = np.transpose(self.folded[kernel], rhs_spec)
      scale, shift, last = self._affine_after(eqn, out_spec[1])
      k = k * scale.reshape(-1, *[1] * (k.ndim - 1)).astype(k.dtype)
      inputs += [self.const(k, self.source.get(kernel))]
      if last != eqn.outputs[0]:
        inputs += [self.const(shift.astype(k.dtype))]
    else:
      last = eqn.outputs[0]
      inputs += [self.node("Transpose", [args[1]], label, perm=list(rhs_spec))]
    y = self.node(
      "Conv", inputs, label, strides=list(p["window_strides"]),
      pads=[lo for lo, _ in pads] + [hi for _, hi in pads],
      dilations=list(p["rhs_dilation"]), group=p["feature_group_count"],
    )  # fmt: skip
    y = self.node("Transpose", [y], label, perm=np.argsort(out_spec).tolist())
    y = self._cast_to_output(eqn, y, label)
    self.names[last] = y
    return y

  def _affine_after(self, eqn: Eqn, axis: int):
    """Folds the per-channel `* s + t` chain after a convolution (its
    bias, an inference-mode BatchNorm) into it: (s, t, the chain's last
    value id), and marks the chain's equations absorbed."""
    v = eqn.outputs[0]
    n = self.p.shapes[v][axis]
    scale, shift = np.ones(n), np.zeros(n)
    while len(self.users.get(v, [])) == 1 and v not in self.p.outputs:
      (i,) = self.users[v]
      e = self.p.eqns[i]
      if e.name not in ("add", "sub", "mul", "div") or len(e.inputs) != 2:
        break
      other = e.inputs[1] if e.inputs[0] == v else e.inputs[0]
      c = self._channel_vector(other, axis, n)
      if c is None or (e.inputs[1] == v and e.name in ("sub", "div")):
        break
      if e.name == "add":
        shift = shift + c
      elif e.name == "sub":
        shift = shift - c
      elif e.name == "mul":
        scale, shift = scale * c, shift * c
      else:
        scale, shift = scale / c, shift / c
      self.absorbed.add(i)
      v = e.outputs[0]
    return scale, shift, v

  def _channel_vector(self, atom, axis: int, n: int):
    """`atom` as a per-channel vector [n], if it is a constant that
    varies along `axis` at most."""
    if isinstance(atom, Literal):
      value = np.asarray(atom.value, np.float64)
    elif atom in self.dep:
      return None
    else:
      value = np.asarray(self.folded[atom], np.float64)
    if value.ndim == 0:
      return np.full(n, float(value))
    shape = value.shape
    if any(d != 1 for a, d in enumerate(shape) if a != axis):
      return None
    if shape[axis] not in (1, n):
      return None
    return np.broadcast_to(value.reshape(-1), (n,)).copy()

  def _pool(self, eqn, args, label, kind: str):
    p = eqn.params
    window, strides = p["window_dimensions"], p["window_strides"]
    pads, rank = p["padding"], len(window)

    def trivial(a):
      return window[a] == 1 and strides[a] == 1 and tuple(pads[a]) == (0, 0)

    if not trivial(0) or any(d != 1 for d in p["base_dilation"]):
      raise OnnxExportError(f"{eqn.name} over the batch axis or dilated")
    channel = rank - 1 if trivial(rank - 1) else 1
    if not trivial(channel):
      raise OnnxExportError(f"{eqn.name} over every non-batch axis")
    spatial = [a for a in range(1, rank) if a != channel]
    perm = [0, channel, *spatial]
    x = self.node("Transpose", [args[0]], label, perm=perm)
    attrs = dict(
      kernel_shape=[window[a] for a in spatial],
      strides=[strides[a] for a in spatial],
      pads=[pads[a][0] for a in spatial] + [pads[a][1] for a in spatial],
    )
    if kind == "MaxPool":
      attrs["dilations"] = [p["window_dilation"][a] for a in spatial]
    elif any(p["window_dilation"][a] != 1 for a in spatial):
      raise OnnxExportError("a dilated sum pooling")
    else:
      attrs["count_include_pad"] = 1
    y = self.node(kind, [x], label, **attrs)
    if kind == "AveragePool":
      size = int(np.prod(attrs["kernel_shape"]))
      n = self.const(np.asarray(size, self.p.dtypes[eqn.outputs[0]]))
      y = self.node("Mul", [y, n], label)
    return self.node("Transpose", [y], label, perm=np.argsort(perm).tolist())

  def _reduce_window_max(self, eqn, args, label):
    return self._pool(eqn, args, label, "MaxPool")

  def _reduce_window_sum(self, eqn, args, label):
    return self._pool(eqn, args, label, "AveragePool")


def _is_zero(atom) -> bool:
  return isinstance(atom, Literal) and np.all(np.asarray(atom.value) == 0)


def _leaf_sources(program: Program) -> dict[int, str]:
  """value id -> the variable path it is computed from alone (a kernel
  through its transposes and casts), for naming nodes and initializers."""
  source = dict(zip(program.leaf_ids, program.leaf_paths, strict=True))
  for e in program.eqns:
    paths = {source[a] for a in program_lib.values(e.inputs) if a in source}
    if len(paths) == 1 and len(e.outputs) == 1:
      source[e.outputs[0]] = paths.pop()
  return source
