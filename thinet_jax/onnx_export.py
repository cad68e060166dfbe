"""ONNX export of any (pruned) model, translated from its traced program.

Serving stacks run ONNX. The model's eval-mode function is traced into
one flat program (`depgraph.program`, the same trace the dependency graph
reads) and each primitive becomes ONNX nodes with `onnx.helper`, so a
preset, a user's Linen or NNX model and a pruned one export alike.
Everything that does not depend on the images (BatchNorm's
`scale * rsqrt(var + eps)`, kernel transposes, broadcasts of biases) is
computed once at export and stored as initializers; what remains is the
per-image computation: convolutions, matrix products, pooling, elementwise
ops, reshapes, concatenations, slices. A primitive without an ONNX
translation stops the export with its name (`OnnxExportError`).

The batch size is symbolic by default: the function is traced at two batch
sizes and the axes whose length follows the batch become ONNX's "batch".
A model whose computation changes with the batch otherwise is exported at
a fixed `batch_size`. (Tracing with `jax2onnx` would pull an older
orbax-checkpoint than this library needs, plus equinox and
huggingface_hub; `jax.export`'s StableHLO has no maintained converter.)

Flax convolutions are NHWC, ONNX's NCHW: each convolution and pooling is
wrapped in Transposes, which ONNX Runtime's layout optimiser cancels
between adjacent layers. By default the graph takes images [B, C, S, S]
(ONNX's convention); `input_layout="nhwc"` takes this library's
[B, S, S, C]. Nodes are named after the layer whose kernel they apply
("conv1_1/Conv", "res2a/branch2a/Conv").

Example:

  >>> proto = onnx_export.to_onnx(net_or_spec, variables, image_size=32)
  >>> open("model.onnx", "wb").write(proto.SerializeToString())
  >>> import onnxruntime
  >>> session = onnxruntime.InferenceSession("model.onnx")
  >>> logits = session.run(None, {"images": images_nchw})[0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from thinet_jax import nets
from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph.program import Program
from thinet_jax.onnx_ops import OnnxExportError, Writer, onnx_type
from thinet_jax.spec import ModelSpec

__all__ = ["OnnxExportError", "from_function", "to_onnx"]


def to_onnx(
  model: ModelSpec | nets.Net,
  variables: Any,
  image_size: int,
  *,
  input_layout: str = "nchw",
  batch_size: int | None = None,
  opset: int = 17,
):
  """An `onnx.ModelProto` of the eval-mode model: "images" -> "logits".

  Args:
    model, variables: the (pruned) model: a preset's spec or any model's
      `nets.Net` (a factory's, pruned or not).
    image_size: S of the inputs.
    input_layout: "nchw" (images [B, C, S, S], ONNX's convention) or
      "nhwc" (this library's [B, S, S, C]).
    batch_size: a fixed batch; default symbolic.
    opset: the ONNX opset to declare (every op used exists since 13).
  """
  net = nets.of(model)
  shape = (image_size, image_size, net.in_channels)
  return from_function(
    net.infer, variables, shape, input_layout=input_layout,
    batch_size=batch_size, opset=opset, name=f"thinet_jax_{net.name}",
  )  # fmt: skip


def from_function(
  fn: Callable[[Any, jax.Array], jax.Array],
  variables: Any,
  image_shape: tuple[int, ...],
  *,
  input_layout: str = "nchw",
  batch_size: int | None = None,
  opset: int = 17,
  name: str = "thinet_jax",
):
  """`fn(variables, images [B, *image_shape])` as an ONNX model.

  image_shape: one image in the function's layout (H, W, C); with
  `input_layout="nchw"` the graph's input is [B, C, H, W] and a Transpose
  feeds the function its NHWC images.
  """
  from onnx import checker, helper

  if input_layout not in ("nchw", "nhwc"):
    raise ValueError(
      f'input_layout must be "nchw" or "nhwc", got {input_layout!r}'
    )
  if batch_size is not None and batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  variables = jax.tree.map(jnp.asarray, variables)
  b = batch_size or 2
  program = _trace(fn, variables, b, image_shape)
  batch_dims = {} if batch_size else _batch_dims(fn, variables, program, b)
  w = Writer(program, variables, batch_dims, b)
  (image,) = program.arg_ids
  x = "images"
  rank = len(image_shape) + 1
  if input_layout == "nchw":
    perm = [0, *range(2, rank), 1]
    x = w.node("Transpose", [x], "images/", perm=perm)
  w.names[image] = x
  for i, eqn in enumerate(program.eqns):
    if w.dependent(eqn) and i not in w.absorbed:
      w.translate(i, eqn)
  outputs = []
  for k, atom in enumerate(program.outputs):
    out = "logits" if len(program.outputs) == 1 else f"output_{k}"
    w.nodes.append(helper.make_node("Identity", [w.ref(atom)], [out], out))
    outputs.append(w.info(out, atom))
  in_shape = (b, *image_shape)
  if input_layout == "nchw":
    in_shape = (b, image_shape[-1], *image_shape[:-1])
  images = helper.make_tensor_value_info(
    "images", onnx_type(program.dtypes[image]),
    ["batch" if batch_dims.get(image) == {0} else b, *in_shape[1:]],
  )  # fmt: skip
  used = {x for n in w.nodes for x in n.input}
  inits = [t for t in w.inits if t.name in used]
  graph = helper.make_graph(w.nodes, name, [images], outputs, inits)
  model = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", opset)],
    producer_name="thinet_jax",
  )  # fmt: skip
  checker.check_model(model)
  return model


def _trace(fn, variables, batch: int, image_shape) -> Program:
  image = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  return program_lib.make_program(fn, variables, image)


def _batch_dims(fn, variables, program: Program, b: int) -> dict:
  """value id -> the axes whose length follows the batch (two traces)."""
  other = _trace(fn, variables, b + 1, program.shapes[program.arg_ids[0]][1:])
  same = len(other.eqns) == len(program.eqns) and all(
    e.name == f.name for e, f in zip(program.eqns, other.eqns, strict=True)
  )
  if not same:
    raise OnnxExportError(
      "the traced computation changes with the batch size, so the batch "
      "cannot be symbolic: pass batch_size=N for a fixed-batch export"
    )
  out = {}
  for v, shape in program.shapes.items():
    dims = {
      a for a, (n, m) in enumerate(zip(shape, other.shapes[v], strict=True))
      if n != m
    }  # fmt: skip
    if dims:
      out[v] = dims
  return out
