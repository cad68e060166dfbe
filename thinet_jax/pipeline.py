"""One ThiNet step: statistics, selection, least squares, surgery, record.

`prune_group` composes the library's pieces for one group (paper section 3,
steps 1-3 of the framework): collect the Gram statistics of the group's
consumer on training images through the current model, rank the channels by
a named criterion, keep `int(C * keep_ratio)` of them, optionally rescale
them by least squares, and rebuild the model smaller.

Example:

  >>> spec2, vars2, record = pipeline.prune_group(
  ...     spec, variables, "conv3_1", batches, keep_ratio=0.5,
  ...     image_size=32, key=jax.random.key(0))
  >>> record.relative_error, record.flops_after / record.flops_before
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import flax
import jax
import numpy as np

from thinet_jax import groups, profile, reconstruct, select, stats, surgery
from thinet_jax.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class PruneRecord:
  """What one pruning step did (JSON-ready via `dataclasses.asdict`).

  relative_error: reconstruction error of the consumer's output with the
    scales applied (`reconstruct.relative_error`), on the statistics'
    samples; relative_error_unscaled: the same with unit scales.
  """

  group: str
  criterion: str
  least_squares: bool
  ridge: float
  width_before: int
  width_after: int
  kept: list[int]
  scales: list[float]
  relative_error: float
  relative_error_unscaled: float
  samples: int
  images: int
  params_before: int
  params_after: int
  flops_before: int
  flops_after: int


def prune_group(
  spec: ModelSpec,
  variables: dict[str, Any],
  group_name: str,
  batches: Iterable[dict[str, Any]],
  *,
  keep_ratio: float,
  image_size: int,
  criterion: str = "thinet",
  least_squares: bool = True,
  ridge: float = 0.0,
  mode: str = "sampled",
  samples_per_image: int = 10,
  key: jax.Array | None = None,
  max_batches: int | None = None,
  progress: bool = True,
) -> tuple[ModelSpec, dict[str, Any], PruneRecord]:
  """Prunes one group by a named criterion; returns the smaller model.

  Args:
    spec, variables: the current model.
    group_name: the producer's path ("conv3_1", "res2a/branch2a").
    batches: training batches ({"image": [B, H, W, C]}) for the statistics.
    keep_ratio: fraction of channels kept, in (0, 1]; n = int(C * ratio),
      at least 1.
    image_size: input size, for the params/FLOPs record.
    criterion: a name in `select.CRITERIA`.
    least_squares: rescale the kept channels (paper eq. 6); else scales 1.
    ridge: ridge term of the least squares.
    mode, samples_per_image: statistics sampling (see `stats`).
    key: PRNG key for sampling and the random criterion.
    max_batches: statistics batches to use.
    progress: show a progress bar.

  Returns:
    (new spec, new variables, PruneRecord).
  """
  if criterion not in select.CRITERIA:
    raise KeyError(
      f"unknown criterion {criterion!r}; known: {', '.join(select.CRITERIA)}"
    )
  group = groups.get(spec, group_name)
  n_keep = select.keep_count(group.width, keep_ratio)
  key = jax.random.key(0) if key is None else key
  stats_key, select_key = jax.random.split(key)
  group_stats = stats.collect(
    spec, variables, group, batches, mode=mode, key=stats_key,
    samples_per_image=samples_per_image, max_batches=max_batches,
    progress=progress,
  )  # fmt: skip
  gram = np.asarray(group_stats.gram, np.float32)
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  inputs = select.SelectionInputs(
    gram=gram,
    zero_fraction=group_stats.zero_fraction,
    producer_kernel=params[f"{group.producer}/kernel"],
    key=select_key,
  )
  order = select.removal_order(criterion, inputs)
  keep = select.keep_indices(order, n_keep)
  if least_squares:
    scales = reconstruct.ridge_scales(gram, keep, ridge)
  else:
    scales = np.ones(n_keep, np.float32)
  new_spec, new_variables = surgery.prune(spec, variables, group, keep, scales)
  before = profile.count(spec, image_size)
  after = profile.count(new_spec, image_size)
  record = PruneRecord(
    group=group.name,
    criterion=criterion,
    least_squares=least_squares,
    ridge=float(ridge),
    width_before=group.width,
    width_after=n_keep,
    kept=[int(i) for i in np.asarray(keep)],
    scales=[float(s) for s in np.asarray(scales)],
    relative_error=float(reconstruct.relative_error(gram, keep, scales)),
    relative_error_unscaled=float(reconstruct.relative_error(gram, keep)),
    samples=group_stats.count,
    images=group_stats.images,
    params_before=before["params"],
    params_after=after["params"],
    flops_before=before["flops"],
    flops_after=after["flops"],
  )
  return new_spec, new_variables, record
