"""One ThiNet step on any traced model: statistics, selection, least
squares, surgery for one group.

  >>> model, variables, record = depgraph.prune_group(
  ...     model, variables, group, batches, keep_ratio=0.5)

Selection runs on the group's combined problem (`stats.combine`: the sum
of the consumers' relative errors); each consumer then gets its own
least-squares scales from its own Gram matrix, folded into its kernel.
`record.errors` holds each consumer's predicted relative error, which the
surgery realises exactly on the statistics' samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thinet_jax import reconstruct, select
from thinet_jax.depgraph.graph import Group
from thinet_jax.depgraph.model import Traced
from thinet_jax.depgraph.stats import collect, combine
from thinet_jax.depgraph.surgery import prune

CRITERIA = ("thinet", "forward", "random")


@dataclasses.dataclass(frozen=True)
class Record:
  """What one step did: the group, widths, kept channels (of the group's
  channels before the step), and each consumer's predicted relative
  reconstruction error."""

  group: str
  width_before: int
  width_after: int
  keep: np.ndarray
  errors: dict[str, float]


def prune_group(
  model: Traced,
  variables: Any,
  group: Group,
  batches: Iterable[Any],
  *,
  keep_ratio: float = 0.5,
  n_keep: int | None = None,
  criterion: str = "thinet",
  least_squares: bool = True,
  ridge: float = 0.0,
  mode: str = "exhaustive",
  key: jax.Array | None = None,
  max_batches: int | None = None,
  progress: bool = False,
) -> tuple[Traced, Any, Record]:
  """Prunes one group to `n_keep` (or `keep_ratio` of its) channels.

  Args:
    model, variables: the traced model (`depgraph.trace*`), possibly
      pruned already, and its current variables.
    group: one of `model.groups`.
    batches: the model's inputs (arrays, argument tuples or dicts with
      "image"); statistics are summed over them.
    keep_ratio, n_keep: how many channels stay (n_keep wins).
    criterion: "thinet" (greedy removal, the paper), "forward" (greedy
      addition against the target), "random".
    least_squares: fit each consumer's scales (else unit scales).
    ridge: ridge term of the least squares.
    mode, key, max_batches, progress: as `depgraph.collect`; key also
      seeds "random".

  Returns:
    (pruned model, pruned variables, Record).
  """
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
  width = model.width(group)
  if n_keep is None:
    n_keep = select.keep_count(width, keep_ratio)
  if not 1 <= n_keep <= width:
    raise ValueError(f"n_keep must lie in [1, {width}], got {n_keep}")
  per_consumer = collect(
    model, variables, group, batches, mode=mode, key=key,
    max_batches=max_batches, progress=progress,
  )  # fmt: skip
  problem = combine(per_consumer)
  if criterion == "thinet":
    order = select.greedy_order(jnp.asarray(problem.gram))
  elif criterion == "forward":
    order = select.forward_order(
      jnp.asarray(problem.gram), jnp.asarray(problem.cross)
    )
  else:
    rng_key = jax.random.key(0) if key is None else key
    order = jax.random.permutation(rng_key, width)
  keep = np.asarray(select.keep_indices(order, n_keep))
  scales, errors = {}, {}
  for name, st in per_consumer.items():
    gram = jnp.asarray(st.gram)
    w = (
      reconstruct.ridge_scales(gram, keep, ridge)
      if least_squares else jnp.ones(len(keep), gram.dtype)
    )  # fmt: skip
    scales[name] = np.asarray(w)
    errors[name] = float(reconstruct.relative_error(gram, keep, w))
  pruned, new_variables = prune(model, variables, group, keep, scales)
  record = Record(group.name, width, n_keep, keep, errors)
  return pruned, new_variables, record
