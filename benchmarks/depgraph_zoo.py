"""The dependency graph on the test zoo: groups, what is left out, exactness.

  python benchmarks/depgraph_zoo.py            # every zoo model
  python benchmarks/depgraph_zoo.py --quick --out F   # two models; the tests

For every model of tests/zoo.py (Linen models written as researchers
write them, and one NNX model): the groups found, the left-out sets with
their reasons, and three measured deviations over all its groups, each
group pruned at keep 0.5 on its own:

* zeroed: max |pruned logits - original logits with the removed channels
  zeroed at every consumer| / max(1, max |logits|), least squares off;
* error: max |measured - predicted| relative reconstruction error of each
  consumer, least squares on (measured on the statistics' samples);
* export: the model with every group pruned, run by jax.export, against
  the eager pruned model (same normalisation).

Writes benchmarks/depgraph_zoo.json.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import depgraph
from thinet_jax import report as report_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "depgraph_zoo.json"
sys.path.insert(0, str(ROOT / "tests"))
import zoo  # noqa: E402


def _dev(a, b) -> float:
  return float(jnp.max(jnp.abs(a - b))) / max(1.0, float(jnp.max(jnp.abs(b))))


def measure(label: str, model, variables, x) -> dict:
  zeroed_dev, error_dev = 0.0, 0.0
  batches = [x, x[::-1] * 0.5]
  for k, group in enumerate(model.groups):
    keep = zoo.half(group.width, k)
    removed = np.setdiff1d(np.arange(group.width), keep)
    reference = model.fn(zoo.zeroed(variables, group, removed), x)
    pruned, small = depgraph.prune(model, variables, group, keep)
    zeroed_dev = max(zeroed_dev, _dev(pruned.apply(small, x), reference))
    for measured, predicted in zoo.reconstruction_check(
      model, variables, group, batches
    ).values():
      error_dev = max(error_dev, abs(measured - predicted))
  whole, v = model, variables
  for k, group in enumerate(model.groups):
    keep = zoo.half(whole.width(group), k)
    whole, v = depgraph.prune(whole, v, group, keep)
  exported = jax.export.export(jax.jit(whole.apply))(v, x)
  export_dev = _dev(exported.call(v, x), whole.apply(v, x))
  return dict(
    model=label,
    groups={g.name: g.width for g in model.groups},
    left_out=[str(x) for x in model.left_out],
    zeroed_dev=zeroed_dev, error_dev=error_dev, export_dev=export_dev,
  )  # fmt: skip


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="two models")
  parser.add_argument("--out", default=None, help="JSON output path")
  args = parser.parse_args()
  if args.quick and args.out is None:
    parser.error("--quick needs --out (the committed results are full runs)")
  names = ["plain_cnn", "self_concat"] if args.quick else list(zoo.ZOO)
  start = time.perf_counter()
  rows = []
  for name in names:
    fn, variables, x, _, _ = zoo.build(name)
    rows.append(measure(name, depgraph.trace(fn, variables, x), variables, x))
  if not args.quick:
    module, x = zoo.nnx_model()
    model, state = depgraph.trace_nnx(module, x)
    rows.append(measure("nnx_residual_cnn", model, state, x))
  for r in rows:
    print(
      f"{r['model']:20s} {len(r['groups'])} groups, "
      f"zeroed {r['zeroed_dev']:.1e}, error {r['error_dev']:.1e}, "
      f"export {r['export_dev']:.1e}"
    )
  report_lib.write_benchmark(
    args.out or str(OUT),
    f"python benchmarks/depgraph_zoo.py{' --quick' if args.quick else ''}",
    time.perf_counter() - start,
    rows=rows,
  )


if __name__ == "__main__":
  main()
