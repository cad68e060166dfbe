"""Any Flax model as a `nets.Net`: from an importable factory, traced.

`--config.model=my_pkg.nets:resnet18` names a function (or class) that
returns a Flax Linen module or an NNX module. `build` calls it, traces the
model's inference function with the dependency graph (`depgraph.trace`)
and its training-mode function beside it, and returns a Net the training
layer runs and the pruning procedure prunes; `pruned(net, traced)` is the
same Net after `depgraph.prune` (both functions then run the pruned
traced program), and `rebuild(net.meta)` makes it again from JSON, which
is how model directories of user models are read back.

Conventions (what a factory's model is asked to do):
  * Linen: `module.apply(variables, images, train=...)` when `__call__`
    takes a `train` argument (BatchNorm on batch statistics and dropout in
    training), else `module.apply(variables, images)` in both modes.
  * NNX: the factory takes `rngs` (an `nnx.Rngs`) if it wants one; the
    module is called as `module(images)` after `module.eval()` or
    `module.train()`; its variables are the pure dicts
    {"params": ..., "batch_stats": ...} of its `nnx.Param` and
    `nnx.BatchStat` state, every RNG stream reseeded per training step.
  * images are [B, S, S, C] float32; the output is logits [B, K].

Variables from a checkpoint (`read_variables`): an Orbax checkpoint
directory, a flax msgpack file (`flax.serialization.to_bytes`), or a
`.safetensors` file whose keys are the leaf paths ("params/conv1/kernel").
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import checks, depgraph, nets
from thinet_jax.depgraph import program as program_lib
from thinet_jax.depgraph import run as run_lib


class FactoryError(ValueError):
  """A model factory path that cannot be imported, called or traced."""


def is_factory(name: str) -> bool:
  """Whether a config's model names a factory ("pkg.mod:fn"), not a
  preset."""
  return ":" in name


def resolve(path: str):
  """The callable named by "package.module:attribute"."""
  module_name, _, attr = path.partition(":")
  if not module_name or not attr:
    raise FactoryError(
      f"model factory {path!r} must look like 'package.module:function'"
    )
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise FactoryError(
      f"model factory {path!r}: cannot import {module_name!r} ({e}); is it "
      "installed or on PYTHONPATH?"
    ) from None
  except SyntaxError as e:
    raise FactoryError(
      f"model factory {path!r}: {e.filename}, line {e.lineno}: syntax "
      f"error ({e.msg})"
    ) from None
  except Exception as e:  # noqa: BLE001 (the user's module raised)
    raise FactoryError(
      f"model factory {path!r}: importing {module_name!r} raised "
      f"{type(e).__name__}: {e}"
    ) from None
  target = module
  for part in attr.split("."):
    if not hasattr(target, part):
      raise FactoryError(f"model factory {path!r}: {module_name} has no {attr}")
    target = getattr(target, part)
  if not callable(target):
    raise FactoryError(f"model factory {path!r} is not callable")
  return target


def _instantiate(factory: str, kwargs: dict, seed: int):
  fn = resolve(factory)
  try:
    return _call(fn, kwargs, seed)
  except FactoryError:
    raise
  except Exception as e:  # noqa: BLE001 (the user's code raised)
    raise FactoryError(
      f"model factory {factory!r} raised {type(e).__name__}: {e} (run it "
      "with --traceback for where)"
    ) from e


def _call(fn, kwargs: dict, seed: int):
  kwargs = dict(kwargs)
  try:
    takes_rngs = "rngs" in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    takes_rngs = False
  if takes_rngs and "rngs" not in kwargs:
    from flax import nnx

    kwargs["rngs"] = nnx.Rngs(seed)
  return fn(**kwargs)


def build(
  factory: str,
  image_size: int,
  in_channels: int,
  seed: int = 0,
  kwargs: dict | None = None,
) -> tuple[nets.Net, dict[str, Any]]:
  """(Net, freshly initialised variables) of a factory's model."""
  import flax.linen as nn
  from flax import nnx

  kwargs = dict(kwargs or {})
  module = _instantiate(factory, kwargs, seed)
  example = jnp.zeros((1, image_size, image_size, in_channels), jnp.float32)
  meta = {
    "factory": factory,
    "kwargs": kwargs,
    "input": [image_size, image_size, in_channels],
  }
  if not isinstance(module, nn.Module | nnx.Module):
    raise FactoryError(
      f"model factory {factory!r} returned a {type(module).__name__}, not a "
      "Flax Linen or NNX module"
    )
  try:
    if isinstance(module, nn.Module):
      variables = dict(module.init(jax.random.key(seed), example))
      variables = {k: v for k, v in variables.items() if k != "intermediates"}
      fns = _linen_fns(module)
      meta["framework"] = "linen"
    else:
      fns, variables = _nnx_fns(module)
      meta["framework"] = "nnx"
    traced = depgraph.trace(fns[0], variables, example)
  except Exception as e:  # noqa: BLE001 (the user's model raised)
    raise FactoryError(
      f"model factory {factory!r}: its model failed on a "
      f"{list(example.shape)} input (NHWC float32 images): "
      f"{type(e).__name__}: {' '.join(str(e).split())[:300]} (run with "
      "--traceback for where)"
    ) from e
  return _net(traced, fns, {**meta, "masks": {}}), variables


def _linen_fns(module):
  takes_train = "train" in inspect.signature(module.__call__).parameters

  def infer(v, x):
    return module.apply(v, x, **({"train": False} if takes_train else {}))

  def train(v, x, key):
    if not takes_train:
      return module.apply(v, x), None
    logits, new = module.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
    )
    return logits, new.get("batch_stats")

  return infer, train


def _nnx_fns(module):
  from flax import nnx

  graphdef, params, stats, rest = nnx.split(
    module, nnx.Param, nnx.BatchStat, ...
  )
  variables = {"params": nnx.to_pure_dict(params)}
  has_stats = bool(jax.tree_util.tree_leaves(stats))
  if has_stats:
    variables["batch_stats"] = nnx.to_pure_dict(stats)

  def fresh(state, values):
    state = jax.tree.map(lambda a: a, state)  # new Variables in this trace
    if values is not None:
      nnx.replace_by_pure_dict(state, values)
    return state

  def merged(v):
    return nnx.merge(
      graphdef, fresh(params, v["params"]),
      fresh(stats, v.get("batch_stats") if has_stats else None),
      fresh(rest, None),
    )  # fmt: skip

  def infer(v, x):
    m = merged(v)
    m.eval()
    return m(x)

  def train(v, x, key):
    m = merged(v)
    m.train()
    tags = sorted(
      {n.tag for _, n in nnx.iter_graph(m) if isinstance(n, nnx.RngStream)}
    )
    if tags:
      nnx.reseed(
        m, **{t: jax.random.fold_in(key, i) for i, t in enumerate(tags)}
      )
    logits = m(x)
    if not has_stats:
      return logits, None
    return logits, nnx.to_pure_dict(nnx.state(m, nnx.BatchStat))

  return (infer, train), variables


def _net(traced, fns, meta: dict) -> nets.Net:
  infer_fn, train_fn = fns
  program = traced.graph.program
  out_shape = program.shapes[program.outputs[0]]
  in_shape = meta["input"]
  if traced.masks:
    trainer = run_lib.Runner(train_fn, traced.structs, traced.masks)
    infer, train = traced.apply, trainer
  else:
    infer, train = infer_fn, train_fn
  abstract_tree = pruned_structs(traced)

  def outputs(variables, images):
    prog = traced.graph.program
    named = [
      (f"{e.name} (equation {i})", e.outputs[0])
      for i, e in enumerate(prog.eqns)
      if e.name in ("conv_general_dilated", "dot_general", "add")
    ]
    got = traced.capture(variables, images, values=[v for _, v in named])
    return [(name, np.asarray(got[v])) for name, v in named]

  net = nets.Net(
    name=meta["factory"],
    infer=infer,
    train=train,
    num_classes=int(out_shape[-1]),
    in_channels=int(in_shape[-1]),
    abstract=lambda image_size: abstract_tree,
    meta=meta,
    outputs=outputs,
    traced=traced,
  )
  object.__setattr__(net, "_fns", fns)
  return net


def pruned_structs(traced) -> Any:
  """The variables' shapes and dtypes after the traced model's pruning."""
  return depgraph.cost.pruned_structs(traced)


def pruned(net: nets.Net, traced) -> nets.Net:
  """`net` after pruning: `traced` is the `depgraph.prune` result."""
  masks = {
    path: [None if m is None else np.flatnonzero(m).tolist() for m in axes]
    for path, axes in traced.masks.items()
  }
  return _net(traced, net._fns, {**net.meta, "masks": masks})


def rebuild(meta: dict) -> nets.Net:
  """The Net a model directory's metadata describes (a preset's spec, or
  a factory with its pruned state)."""
  if "spec" in meta:
    from thinet_jax.spec import ModelSpec

    return nets.of(ModelSpec.from_dict(meta["spec"]))
  size, _, channels = meta["input"]
  net, _ = build(meta["factory"], size, channels, kwargs=meta["kwargs"])
  if not meta["masks"]:
    return net
  shapes = {
    p: program_lib.struct(s).shape
    for p, s in zip(
      net.traced.graph.program.leaf_paths,
      jax.tree_util.tree_leaves(net.traced.structs),
      strict=True,
    )
  }
  masks = {}
  for path, axes in meta["masks"].items():
    masks[path] = tuple(
      None if idx is None else np.isin(np.arange(shapes[path][a]), idx)
      for a, idx in enumerate(axes)
    )
  return pruned(net, net.traced.replace(masks=masks))


def read_variables(path: str, like: Any) -> Any:
  """Variables from a checkpoint, checked against `like` (the model's
  variables or their shapes): an Orbax directory, a flax msgpack file or a
  .safetensors file (keys: leaf paths joined by "/").

  Raises:
    FileNotFoundError: no such file or directory.
    ValueError: an unknown format, a file that cannot be read as its
      format (empty, truncated, corrupt; the file named), or variables
      that do not fit the model (the first one named).
    checks.NonFiniteError: a variable holds NaN or inf (named).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  if os.path.isdir(path):
    import orbax.checkpoint as ocp

    what = "an Orbax checkpoint directory"
    read = lambda: _orbax(ocp, path)  # noqa: E731
  elif path.endswith(".safetensors"):
    from safetensors.numpy import load_file

    what = "a .safetensors file"
    read = lambda: _unflatten(load_file(path))  # noqa: E731
  elif path.endswith((".msgpack", ".flax")):
    import flax.serialization

    what = "a flax msgpack file"

    def read():
      with open(path, "rb") as f:
        restored = flax.serialization.msgpack_restore(f.read())
      if not isinstance(restored, dict):
        raise TypeError(f"it holds a {type(restored).__name__}, not a dict")
      return restored

  else:
    raise ValueError(
      f"unknown checkpoint format {path!r}: use an Orbax directory, a "
      ".msgpack file (flax.serialization.to_bytes) or a .safetensors file"
    )
  try:
    restored = read()
  except Exception as e:  # noqa: BLE001 (any failure to parse: corrupt)
    detail = " ".join(str(e).split())[:200]
    raise ValueError(
      f"checkpoint {path!r} cannot be read as {what} ({type(e).__name__}: "
      f"{detail}); is it empty, truncated or of another format?"
    ) from None
  return _match(restored, like, path)


def _orbax(ocp, path: str) -> Any:
  if not os.listdir(path):
    raise FileNotFoundError("the folder is empty")
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(os.path.abspath(path))


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for key, value in flat.items():
    parts = key.replace(".", "/").split("/")
    node = out
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return out


def _match(restored: Any, like: Any, path: str) -> Any:
  """`restored` in `like`'s structure, every leaf's shape checked and
  finite; variables the model does not have are left out with a warning
  (a layer the factory no longer builds)."""
  want = dict(
    (program_lib.path_name(p), s)
    for p, s in jax.tree_util.tree_flatten_with_path(like)[0]
  )
  got = dict(
    (program_lib.path_name(p), x)
    for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]
  )
  missing = sorted(set(want) - set(got))
  if missing:
    raise ValueError(
      f"checkpoint {path} lacks {len(missing)} of the model's variables "
      f"(first: {missing[0]}); it holds {sorted(got)[:3]}...: does it belong "
      "to this model factory?"
    )
  leaves = []
  for name, s in want.items():
    x = np.asarray(got[name])
    if tuple(x.shape) != tuple(np.shape(s)):
      raise ValueError(
        f"checkpoint {path}: {name} has shape {x.shape}, the model expects "
        f"{tuple(np.shape(s))}"
      )
    leaves.append(jnp.asarray(x, program_lib.struct(s).dtype))
  extra = sorted(set(got) - set(want))
  if extra:
    warnings.warn(
      f"checkpoint {path} holds {len(extra)} variables the model does not "
      f"have (first: {extra[0]}); they are left out: was a layer removed "
      "from the model factory?",
      stacklevel=3,
    )
  variables = jax.tree_util.tree_unflatten(
    jax.tree_util.tree_structure(like), leaves
  )
  checks.check_finite(variables, f"checkpoint {path}")
  return variables


def count(net: nets.Net, image_size: int) -> dict[str, int]:
  """Params and FLOPs (2 per multiply-add of every convolution and dot
  product, the kernel's full window at every output position, as
  `profile.count`) of a Net, read off its (pruned) traced program."""
  if net.spec is not None:
    from thinet_jax import profile

    p = profile.count(net.spec, image_size)
    return {"params": p["params"], "flops": p["flops"]}
  return depgraph.cost.count(net.traced, example(net, image_size))


def example(model: Any, image_size: int) -> jax.ShapeDtypeStruct:
  """One image [1, S, S, C] of a preset's or any Net's input: what traces,
  costs and counts are taken on."""
  channels = nets.of(model).in_channels
  return jax.ShapeDtypeStruct(
    (1, image_size, image_size, channels), jnp.float32
  )


def graph_of(model: Any, image_size: int) -> depgraph.Traced:
  """The traced inference function of a preset's spec or of any Net (its
  own trace): what the graph path (allocation, costs) reads."""
  net = nets.of(model)
  if net.traced is not None:
    return net.traced
  return depgraph.trace(
    net.infer, net.abstract(image_size), example(net, image_size)
  )


def program_digest(model: Any, image_size: int) -> str:
  """The identity of a model's computation: `program.digest` of its traced
  inference function at `image_size` (primitives, shapes, static
  parameters; not its values). A factory whose code changed (an
  activation, a width) digests differently, so a resumed run can tell."""
  net = nets.of(model)
  program = program_lib.make_program(
    net.infer, net.abstract(image_size), example(net, image_size)
  )
  return program_lib.digest(program)


def widths(base: nets.Net, net: nets.Net) -> list[dict[str, Any]]:
  """Every group of the unpruned model: original and kept width."""
  return [
    {
      "group": g.name,
      "original": g.width,
      "kept": net.traced.width(net.traced.group(g.name)),
    }
    for g in base.traced.groups
  ]
