"""Selection speed: jitted greedy + least squares against the official loop.

  python benchmarks/greedy_speed.py            # C = 64, 128, 256, 512
  python benchmarks/greedy_speed.py --quick    # seconds; run by the tests

On the same 100,000 x C sample matrix X (one row per sampled contribution,
as the official code collects them), for keep ratio 0.5:

* official: the official code's `value_sum` (ThiNet_ICCV compress_model.py)
  transcribed to NumPy: per step, the norm of the running sum plus every
  candidate column, then the closed-form least squares on X_S.
* ours: the Gram matrix G = X^T X (one matmul, timed on its own: the floor
  any Gram-based selection starts from), then `select.greedy_order(G)` and
  `reconstruct.ridge_scales(G, keep)`, jitted, timed after compilation.

Writes benchmarks/greedy_speed.json: per C the times, the speed ratio and
whether the kept sets are identical.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import reconstruct, select
from thinet_jax import report as report_lib

OUT = pathlib.Path(__file__).resolve().parent / "greedy_speed.json"


def official_removals(x: np.ndarray, n_remove: int) -> list[int]:
  """The official selection loop (ThiNet_ICCV compress_model.py,
  `value_sum`) in NumPy: per step, the norm of the running sum plus every
  remaining column; strict `<`, so ties go to the lowest index."""
  discard: list[int] = []
  x_tmp = np.zeros(x.shape[0])
  for _ in range(n_remove):
    min_value, min_index = np.inf, -1
    for j in range(x.shape[1]):
      if j not in discard:
        value = np.linalg.norm(x_tmp + x[:, j])
        if value < min_value:
          min_value, min_index = value, j
    discard.append(min_index)
    x_tmp += x[:, min_index]
  return discard


def official_value_sum(x: np.ndarray, keep_ratio: float):
  """The official selection and closed-form least squares (float64)."""
  goal = int(x.shape[1] * keep_ratio)
  discard = official_removals(x, x.shape[1] - goal)
  index = np.sort(np.array(sorted(set(range(x.shape[1])) - set(discard))))
  selected = x[:, index]
  w = np.linalg.solve(selected.T @ selected, selected.T @ x.sum(axis=1))
  return index, w


def _timed(fn, repeat: int = 3):
  fn()  # compile / warm up
  best = np.inf
  for _ in range(repeat):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    best = min(best, time.perf_counter() - start)
  return best, out


_gram = jax.jit(lambda x: x.T @ x)


def measure(c: int, samples: int, keep_ratio: float) -> dict:
  rng = np.random.default_rng(c)
  # Post-ReLU-like contributions: a shared component plus channel noise.
  x = rng.normal(size=(samples, c)) * rng.uniform(0.2, 2.0, c)
  x += rng.normal(size=(samples, 1)) * rng.uniform(-0.5, 0.5, c)
  x32 = jnp.asarray(x, jnp.float32)
  n_keep = select.keep_count(c, keep_ratio)

  start = time.perf_counter()
  want_keep, want_w = official_value_sum(x, keep_ratio)
  official_s = time.perf_counter() - start

  gram_s, gram = _timed(lambda: _gram(x32))

  def select_and_fit():
    order = select.greedy_order(gram)
    keep = select.keep_indices(order, n_keep)
    return keep, reconstruct.ridge_scales(gram, keep)

  ours_s, (keep, w) = _timed(select_and_fit)
  same = bool(np.array_equal(np.asarray(keep), want_keep))
  row = dict(
    channels=c,
    samples=samples,
    keep=n_keep,
    official_s=official_s,
    gram_s=gram_s,
    select_and_fit_s=ours_s,
    ours_total_s=gram_s + ours_s,
    speedup=official_s / (gram_s + ours_s),
    select_over_gram=ours_s / gram_s,
    same_kept_set=same,
    max_scale_diff=float(np.max(np.abs(np.asarray(w) - want_w)))
    if same
    else None,
  )
  print(
    f"C={c:4d}: official {official_s:8.3f} s | ours {gram_s + ours_s:.4f} s"
    f" (Gram {gram_s:.4f} + select/fit {ours_s:.4f}) | "
    f"speed-up {row['speedup']:7.0f}x | same kept set: {same}"
  )
  return row


def run(channels: list[int], samples: int, keep_ratio: float = 0.5):
  return [measure(c, samples, keep_ratio) for c in channels]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes")
  parser.add_argument("--out", default=str(OUT), help="JSON output path")
  args = parser.parse_args()
  start = time.perf_counter()
  if args.quick:
    rows = run([16, 32], samples=2_000)
  else:
    rows = run([64, 128, 256, 512], samples=100_000)
  report_lib.write_benchmark(
    args.out,
    f"python benchmarks/greedy_speed.py{' --quick' if args.quick else ''}",
    time.perf_counter() - start,
    rows=rows,
  )


if __name__ == "__main__":
  main()
