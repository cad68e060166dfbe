"""A pure JAX function as one flat list of primitive applications.

`make_program(fn, variables, *args)` traces `fn(variables, *args)` with
`jax.make_jaxpr` and inlines every call-like primitive (`jit`, `pjit`,
`closed_call`, `custom_jvp_call`, `custom_vjp_call`, `remat`): the
dependency analysis and the evaluators below then see one straight-line
program whose values are numbered (`int` ids), whose first inputs are the
leaves of `variables` (named by their pytree path, e.g.
"params/conv1/kernel") and whose constants are kept as values.

`evaluate(program, flat_inputs, capture=..., params_of=...)` runs it by
binding each primitive again (so it runs under `jit`, `grad` and
`jax.export` like the original), returning the outputs and any captured
intermediate values; `params_of(i, eqn, values)` may replace an equation's
parameters, which is how a pruned model runs with smaller shapes
(`depgraph.run`).

Inlining drops custom differentiation rules (`custom_jvp`/`custom_vjp`):
the evaluated program differentiates its primal computation instead (e.g.
`relu`'s derivative at exactly 0 becomes `max`'s 0.5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

# Call-like primitives and the parameter holding the called jaxpr.
INLINED = {
  "jit": "jaxpr",
  "pjit": "jaxpr",
  "closed_call": "call_jaxpr",
  "core_call": "call_jaxpr",
  "custom_jvp_call": "call_jaxpr",
  "custom_vjp_call": "call_jaxpr",
  "custom_vjp_call_jaxpr": "fun_jaxpr",
  "remat2": "jaxpr",
  "checkpoint": "jaxpr",
}


@dataclasses.dataclass(frozen=True)
class Literal:
  """A scalar literal of the traced program."""

  value: Any


@dataclasses.dataclass(frozen=True)
class Eqn:
  """One primitive application: `outputs = primitive.bind(*inputs, **params)`.

  inputs: value ids or `Literal`s; outputs: value ids.
  """

  primitive: Any
  params: dict
  inputs: tuple
  outputs: tuple

  @property
  def name(self) -> str:
    return self.primitive.name


@dataclasses.dataclass
class Program:
  """A flat traced program.

  Attributes:
    eqns: the primitive applications in order.
    inputs: value ids of the flat inputs: the variable leaves, then the
      leaves of the other arguments.
    outputs: value ids (or `Literal`s) of the flat outputs.
    shapes, dtypes: of every value id.
    consts: value id -> array, the traced function's closed-over constants.
    leaf_paths: the variable leaves' paths, in `inputs` order.
    variables_def, args_def, out_def: pytree structures of the variables,
      the other arguments and the outputs.
  """

  eqns: list[Eqn]
  inputs: list[int]
  outputs: list
  shapes: dict[int, tuple]
  dtypes: dict[int, Any]
  consts: dict[int, Any]
  leaf_paths: list[str]
  variables_def: Any
  args_def: Any
  out_def: Any

  @property
  def leaf_ids(self) -> list[int]:
    return self.inputs[: len(self.leaf_paths)]

  @property
  def arg_ids(self) -> list[int]:
    return self.inputs[len(self.leaf_paths) :]

  def producers(self) -> dict[int, int]:
    """value id -> index of the equation that computes it."""
    return {v: i for i, e in enumerate(self.eqns) for v in e.outputs}

  def users(self) -> dict[int, list[int]]:
    """value id -> indices of the equations that read it."""
    out: dict[int, list[int]] = {}
    for i, e in enumerate(self.eqns):
      for a in values(e.inputs):
        out.setdefault(a, []).append(i)
    return out


def digest(program: Program) -> str:
  """sha256 of what a program computes: its inputs' paths, shapes and
  dtypes, every equation's primitive, static parameters, operands and
  output shapes, and its constants' values. Two traces of one model hash
  equal; a changed activation, width, layer or constant does not. Python
  names (of functions, of jitted helpers) are inlined away and not hashed.
  """
  import hashlib
  import re

  h = hashlib.sha256()

  def add(*parts):
    text = "|".join(str(p) for p in parts)
    h.update(re.sub(r"0x[0-9a-fA-F]+", "0x", text).encode())
    h.update(b"\n")

  args = [""] * len(program.arg_ids)  # the model's inputs have no path
  for v, path in zip(program.inputs, program.leaf_paths + args, strict=True):
    add("in", v, path, program.shapes[v], program.dtypes[v])
  for v in sorted(program.consts):
    value = np.ascontiguousarray(np.asarray(program.consts[v]))
    add("const", v, value.dtype, value.shape)
    h.update(value.tobytes())
  for eqn in program.eqns:
    params = sorted((k, repr(p)) for k, p in eqn.params.items())
    operands = [a if isinstance(a, int) else repr(a.value) for a in eqn.inputs]
    shapes = [(program.shapes[o], program.dtypes[o]) for o in eqn.outputs]
    add(eqn.name, params, operands, eqn.outputs, shapes)
  add("out", [o if isinstance(o, int) else repr(o.value)
              for o in program.outputs])  # fmt: skip
  return h.hexdigest()


def path_name(path: Sequence[Any]) -> str:
  """A pytree key path as "a/b/c" (dict keys, attributes, indices)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def leaf_paths(variables: Any) -> list[str]:
  """The leaves' path names of a variables pytree, in flatten order."""
  with_paths, _ = jax.tree_util.tree_flatten_with_path(variables)
  return [path_name(p) for p, _ in with_paths]


def _is_closed(jaxpr) -> bool:
  return hasattr(jaxpr, "consts") and hasattr(jaxpr, "jaxpr")


class _Builder:
  def __init__(self):
    self.eqns: list[Eqn] = []
    self.shapes: dict[int, tuple] = {}
    self.dtypes: dict[int, Any] = {}
    self.consts: dict[int, Any] = {}
    self.count = 0

  def new(self, aval) -> int:
    i = self.count
    self.count += 1
    self.shapes[i] = tuple(int(d) for d in aval.shape)
    self.dtypes[i] = aval.dtype
    return i

  def const(self, value) -> int:
    value = np.asarray(value) if not isinstance(value, jax.Array) else value
    i = self.new(jax.typeof(value))
    self.consts[i] = value
    return i

  def inline(self, jaxpr, consts: Sequence[Any], inputs: Sequence[Any]):
    env: dict[Any, Any] = {}

    def read(atom):
      if hasattr(atom, "val"):  # a jaxpr Literal
        return Literal(atom.val)
      return env[atom]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
      env[var] = self.const(value) if np.ndim(value) else Literal(value)
    for var, atom in zip(jaxpr.invars, inputs, strict=True):
      env[var] = atom
    for eqn in jaxpr.eqns:
      ins = [read(a) for a in eqn.invars]
      key = INLINED.get(eqn.primitive.name)
      if key is not None and key in eqn.params:
        inner = eqn.params[key]
        if _is_closed(inner):
          outs = self.inline(inner.jaxpr, inner.consts, ins)
        else:
          outs = self.inline(inner, [], ins)
      else:
        outs = [self.new(v.aval) for v in eqn.outvars]
        self.eqns.append(
          Eqn(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs))
        )
      for var, out in zip(eqn.outvars, outs, strict=True):
        env[var] = out
    return [read(a) for a in jaxpr.outvars]


def make_program(fn: Callable, variables: Any, *args: Any) -> Program:
  """Traces `fn(variables, *args)` into a flat `Program`.

  `variables` and `args` may hold arrays or `jax.ShapeDtypeStruct`s; only
  shapes and dtypes are read. Keyword arguments: close over them.
  """
  var_leaves, variables_def = jax.tree_util.tree_flatten(variables)
  arg_leaves, args_def = jax.tree_util.tree_flatten(args)
  n = len(var_leaves)

  def flat_fn(*flat):
    v = jax.tree_util.tree_unflatten(variables_def, flat[:n])
    a = jax.tree_util.tree_unflatten(args_def, flat[n:])
    return fn(v, *a)

  structs = [struct(x) for x in var_leaves + arg_leaves]
  closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*structs)
  out_def = jax.tree_util.tree_structure(out_shape)
  b = _Builder()
  inputs = [b.new(v.aval) for v in closed.jaxpr.invars]
  outputs = b.inline(closed.jaxpr, closed.consts, inputs)
  return Program(
    eqns=b.eqns, inputs=inputs, outputs=outputs, shapes=b.shapes,
    dtypes=b.dtypes, consts=b.consts, leaf_paths=leaf_paths(variables),
    variables_def=variables_def, args_def=args_def, out_def=out_def,
  )  # fmt: skip


def struct(x: Any) -> jax.ShapeDtypeStruct:
  """The shape and dtype of an array, a ShapeDtypeStruct or a scalar."""
  dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
  return jax.ShapeDtypeStruct(np.shape(x), dtype)


def values(atoms) -> list[int]:
  """The value ids among an equation's atoms (literals left out)."""
  return [a for a in atoms if not isinstance(a, Literal)]


def evaluate(
  program: Program,
  flat_inputs: Sequence[Any],
  capture: Sequence[int] = (),
  params_of: Callable[[int, Eqn, list], dict] | None = None,
  consts: dict[int, Any] | None = None,
  inputs_of: Callable[[int, Eqn, list], list] | None = None,
) -> tuple[list, dict[int, Any]]:
  """Runs a program on flat inputs (traceable).

  Args:
    program: from `make_program`.
    flat_inputs: one value per `program.inputs`.
    capture: value ids whose values to return beside the outputs.
    params_of: replaces an equation's parameters (pruned shapes).
    consts: replaces the program's constants (pruned constants).
    inputs_of: replaces an equation's input values (`inputs_of(i, eqn,
      values)`; a sweep's shared-kernel variants scale a consumer's input).

  Returns:
    (flat outputs, {captured id: value}).
  """
  env: dict[int, Any] = dict(program.consts if consts is None else consts)
  env.update(zip(program.inputs, flat_inputs, strict=True))
  wanted = set(capture)

  def read(atom):
    return atom.value if isinstance(atom, Literal) else env[atom]

  for i, eqn in enumerate(program.eqns):
    values = [read(a) for a in eqn.inputs]
    if inputs_of is not None:
      values = inputs_of(i, eqn, values)
    params = eqn.params if params_of is None else params_of(i, eqn, values)
    out = eqn.primitive.bind(*values, **params)
    outs = out if eqn.primitive.multiple_results else [out]
    env.update(zip(eqn.outputs, outs, strict=True))
  return [read(a) for a in program.outputs], {v: env[v] for v in wanted}
