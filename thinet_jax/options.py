"""How a group is pruned: the method's options as one small frozen type.

Shared by the ModelSpec pipeline (`pipeline.prune_group`), the graph step
(`depgraph.prune_step`) and the commands' configs, so every path reads the
same fields with the same meaning.
"""

from __future__ import annotations

import dataclasses
import numbers
from math import inf

import numpy as np

TARGETS = ("current", "original")
REFITS = ("scales", "kernel")


@dataclasses.dataclass(frozen=True)
class PruneOptions:
  """How a group is pruned.

  criterion: a name registered in `select.CRITERIA` (`register_criterion`).
  least_squares: rescale the kept channels (paper eq. 6); else scales 1.
  ridge: ridge term of the least squares (>= 0).
  mode, samples_per_image: statistics sampling ("sampled", the paper's 10
    positions per image, or "exhaustive").
  centred: fit on the centred statistics and fold each output channel's
    lost mean into the consumer's bias or BatchNorm mean.
  bn_batches: after surgery the caller re-estimates BatchNorm statistics on
    this many batches (0: not); the step itself does no training.
  target: "current" (the consumer's output in the model being pruned, the
    paper's) or "original" (the unpruned model's output on the same
    images, so each group also undoes what earlier groups left).
  refit: "scales" (one least-squares scale per kept channel, the paper's
    eq. 6) or "kernel" (the consumers' whole kernels refitted by least
    squares after surgery, He et al. 2017; `depgraph.refit_kernels`).
  """

  criterion: str = "thinet"
  least_squares: bool = True
  ridge: float = 0.0
  mode: str = "sampled"
  samples_per_image: int = 10
  centred: bool = False
  bn_batches: int = 0
  target: str = "current"
  refit: str = "scales"

  def check(self, has_reference: bool = True) -> None:
    """Raises ValueError/KeyError naming the bad field and the fix."""
    from thinet_jax import select, stats

    if self.criterion not in select.CRITERIA:
      raise KeyError(
        f"unknown criterion {self.criterion!r}; known: "
        f"{', '.join(select.CRITERIA)} (add one with register_criterion)"
      )
    if self.target not in TARGETS:
      raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
    if self.target == "original" and not has_reference:
      raise ValueError(
        'target="original" needs reference=(model, variables) of the '
        "unpruned model"
      )
    if self.criterion == "weight_sum_original" and not has_reference:
      raise ValueError(
        'criterion "weight_sum_original" needs reference=(model, variables) '
        "of the unpruned model"
      )
    if self.refit not in REFITS:
      raise ValueError(f"refit must be one of {REFITS}, got {self.refit!r}")
    if self.refit == "kernel" and not self.least_squares:
      raise ValueError(
        'refit="kernel" is a least-squares fit: it needs least_squares=True'
      )
    if self.mode not in stats.MODES:
      raise ValueError(f"mode must be one of {stats.MODES}, got {self.mode!r}")
    if not (isinstance(self.ridge, numbers.Real) and 0 <= self.ridge < inf):
      raise ValueError(f"ridge must be a finite number >= 0, got {self.ridge}")
    for name in ("bn_batches", "samples_per_image"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    for name in ("least_squares", "centred"):
      if not isinstance(getattr(self, name), bool | np.bool_):
        raise ValueError(f"{name} must be True or False")
    if self.bn_batches < 0:
      raise ValueError(f"bn_batches must be >= 0, got {self.bn_batches}")
    if self.samples_per_image < 1:
      raise ValueError(
        f"samples_per_image must be >= 1, got {self.samples_per_image}"
      )
