"""Dependency-graph speed: tracing + group discovery against Torch-Pruning.

  python benchmarks/depgraph_speed.py                 # full-size, 224x224
  python benchmarks/depgraph_speed.py --quick --out F # small; the tests

For full-size VGG-16 and ResNet-50 at 224x224, batch 1:

* ours: `depgraph.trace_linen` on the presets' Flax modules, from the
  variables' shapes only: `jax.make_jaxpr` of `Module.apply`, flattening,
  the per-primitive rules and the solve into groups. Also on a
  flax-examples-style ResNet-50 written outside the library.
* Torch-Pruning 1.6 (PyPI): `tp.DependencyGraph().build_dependency(model,
  example_inputs)` (a traced forward pass plus its graph), then
  `get_all_groups()`, on torchvision's VGG-16 and ResNet-50 layouts
  (module for module the same architectures; torchvision's own wheel is a
  CUDA build here, so the models are defined in `benchmarks/torch_models.py`).

Each is timed `--repeat` times after one warm-up; the best and the median
are written to benchmarks/depgraph_speed.json with the groups each found.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from thinet_jax import depgraph, models, presets
from thinet_jax import report as report_lib
from thinet_jax.depgraph import graph as graph_lib
from thinet_jax.depgraph import program as program_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "depgraph_speed.json"
sys.path.insert(0, str(ROOT / "tests"))  # zoo
sys.path.insert(0, str(ROOT))  # benchmarks.torch_models


def _timed(fn, repeat: int) -> tuple[dict, object]:
  out = fn()  # warm-up
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return dict(best_s=min(times), median_s=statistics.median(times)), out


def _ours(label: str, module, variables, x, size: int, repeat: int, **kw):
  """trace_linen in two timed parts: the trace (a fresh closure each time,
  so nothing is cached: jax.make_jaxpr of Module.apply and flattening) and
  the discovery (rules and solve)."""

  def fn(v, *args):
    return module.apply(v, *args, **kw)

  trace, program = _timed(
    lambda: program_lib.make_program(lambda v, a: fn(v, a), variables, x),
    repeat,
  )
  solve, graph = _timed(lambda: graph_lib.Graph(program), repeat)
  total, model = _timed(
    lambda: depgraph.trace_linen(module, variables, x, **kw), repeat
  )
  assert len(model.groups) == len(graph.groups)
  return dict(
    model=label, size=size, groups=len(graph.groups), eqns=len(program.eqns),
    trace_best_s=trace["best_s"], discovery_best_s=solve["best_s"], **total,
  )  # fmt: skip


def ours(name: str, size: int, repeat: int) -> dict:
  spec = presets.get(name)
  module = models.build(spec)
  variables = jax.eval_shape(lambda: models.init(spec, jax.random.key(0), size))
  x = jax.ShapeDtypeStruct((1, size, size, spec.in_channels), jnp.float32)
  return _ours(name, module, variables, x, size, repeat, train=False)


def ours_examples_resnet(size: int, repeat: int, stages=(3, 4, 6, 3)) -> dict:
  import zoo

  module = zoo.ExamplesResNet(
    stage_sizes=stages, num_filters=64, num_classes=1000
  )
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), x)
  label = f"flax-examples ResNet{stages}"
  return _ours(label, module, variables, x, size, repeat)


def torch_pruning(arch: str, size: int, repeat: int, side: int = 7) -> dict:
  import torch
  import torch_pruning as tp

  from benchmarks import torch_models

  torch.manual_seed(0)
  model = torch_models.full_size(arch, side=side).eval()
  example = torch.randn(1, 3, size, size)

  def build():
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    return list(graph.get_all_groups())

  timing, groups = _timed(build, repeat)
  return dict(
    model=f"torch {arch}", size=size, groups=len(groups),
    torch_pruning=importlib.metadata.version("torch-pruning"),
    torch=torch.__version__, **timing,
  )  # fmt: skip


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="32x32, 1 repeat")
  parser.add_argument("--repeat", type=int, default=5)
  parser.add_argument("--out", default=None, help="JSON output path")
  args = parser.parse_args()
  if args.quick and args.out is None:
    parser.error("--quick needs --out (the committed results are full runs)")
  size, repeat = (32, 1) if args.quick else (224, args.repeat)
  side = 1 if args.quick else 7
  start = time.perf_counter()
  rows = [
    ours("vgg16", size, repeat),
    torch_pruning("vgg16", size, repeat, side),
    ours("resnet50", size, repeat),
    torch_pruning("resnet50", size, repeat),
    ours_examples_resnet(size, repeat),
  ]
  for row in rows:
    parts = ""
    if "trace_best_s" in row:
      parts = (
        f" (trace {row['trace_best_s']:.3f} + discovery "
        f"{row['discovery_best_s']:.3f})"
      )
    print(
      f"{row['model']:32s} {row['size']}px: best {row['best_s']:.3f} s"
      f"{parts}, median {row['median_s']:.3f} s, {row['groups']} groups"
    )
  report_lib.write_benchmark(
    args.out or str(OUT),
    f"python benchmarks/depgraph_speed.py{' --quick' if args.quick else ''}",
    time.perf_counter() - start,
    rows=rows,
  )


if __name__ == "__main__":
  main()
