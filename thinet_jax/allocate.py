"""Budget allocation: per-group keep counts for a params or FLOPs target.

Each group's error curve e_g(n) (`solve.error_curve`, or the graph's
`depgraph.error_curve` under the run's options) says how much of its
consumers' output is lost with n channels kept; the model's cost is a
quadratic polynomial in the groups' widths (`CostModel`, exact: every
convolution and dense layer costs input width x output width x a
constant). `allocate` removes channels one at a time where the error added
per unit of cost saved is smallest, until the target is met.

  >>> model = depgraph.cost_model(traced, names, x)
  >>> counts = allocate(curves, model, target=0.5)       # name -> keep count
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class CostModel:
  """Exact params or FLOPs of a model as a function of group widths.

  Every conv and dense layer costs (its input width) x (its output width) x
  a constant, so the cost is a quadratic polynomial in the groups' widths.
  Removing d_g channels from group g:

      cost(W - d) = base - sum_g a_g d_g + 1/2 sum_{g,h} b_gh d_g d_h

  b_gg is zero unless one layer reads and writes the same group (a layer
  applied to its own output). `depgraph.cost_model` reads a and b off
  the traced program (a preset's or any model's) with one or two
  channels removed.
  """

  names: tuple[str, ...]
  widths: np.ndarray
  base: float
  linear: np.ndarray  # a [G]
  pairs: np.ndarray  # b [G, G], symmetric

  def cost(self, counts: Any) -> float:
    d = self.widths - np.asarray(counts)
    return float(self.base - self.linear @ d + 0.5 * d @ self.pairs @ d)

  def saving(self, counts: Any) -> np.ndarray:
    """[G]: the cost saved by removing one more channel of each group."""
    d = self.widths - np.asarray(counts)
    return self.linear - self.pairs @ d - 0.5 * np.diagonal(self.pairs)


def allocate(
  curves: Mapping[str, Any],
  model: CostModel,
  target: float,
) -> dict[str, int]:
  """Per-group keep counts meeting a cost target with the least summed
  relative reconstruction error (greedy marginal allocation).

  Starting from every group at full width, repeatedly remove one channel
  from the group whose next removal adds the least error per unit of cost
  saved, (e_g(n_g - 1) - e_g(n_g)) / saving_g, until the cost is at most
  `target` x the original. Each group keeps at least one channel. The
  errors are each group's own (its consumer's output, statistics of the
  unpruned model), so the sum is a proxy for the network's loss, as in the
  paper's layer-wise objective.

  Args:
    curves: name -> e(n) for n = 1..C (`error_curve`), for `model.names`.
    model: `cost_model` of the same groups.
    target: the kept fraction of the original cost, in (0, 1].

  Returns:
    name -> keep count.

  Raises:
    ValueError: the target is out of range or below what pruning these
      groups can reach (the message gives the reachable minimum).
  """
  if not 0.0 < target <= 1.0:
    raise ValueError(
      f"target must be in (0, 1] (the fraction of the original cost kept), "
      f"got {target}"
    )
  missing = [n for n in model.names if n not in curves]
  if missing:
    raise KeyError(f"no error curve for groups {missing}")
  errors = []
  for name, width in zip(model.names, model.widths, strict=True):
    e = np.asarray(curves[name], np.float64)
    if e.shape != (width,):
      raise ValueError(
        f"the error curve of {name} has {e.shape[0]} entries; the group has "
        f"{width} channels (one entry per keep count 1..C)"
      )
    errors.append(e)
  budget = target * model.cost(model.widths)
  floor = model.cost(np.ones_like(model.widths))
  if floor > budget:
    raise ValueError(
      f"target {target} is out of reach: keeping one channel in every group "
      f"still costs {floor / model.cost(model.widths):.4f} of the original; "
      "raise the target or prune more groups"
    )
  counts = model.widths.copy()
  while model.cost(counts) > budget:
    saving = model.saving(counts)
    added = np.array(
      [
        e[n - 2] - e[n - 1] if n > 1 else np.inf
        for e, n in zip(errors, counts, strict=True)
      ]
    )
    price = np.where(saving > 0, np.maximum(added, 0.0) / saving, np.inf)
    g = int(np.argmin(price))
    if not np.isfinite(price[g]):
      break  # Unreachable: the floor check above rules this out.
    counts[g] -= 1
  return {n: int(c) for n, c in zip(model.names, counts, strict=True)}
