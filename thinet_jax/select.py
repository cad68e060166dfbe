"""Channel selection: the paper's greedy order and baseline criteria.

Every criterion returns a *removal order*: an int32 permutation of the C
channels, the first removed first. The kept set for any keep count n is the
last n entries (`keep_indices`), so one order answers every ratio.

ThiNet's greedy (paper Algorithm 1, as the official code runs it) removes,
one at a time, the channel c minimising the squared norm of the summed
contributions of everything removed so far plus c:

    f(T + c) = f(T) + 2 (G 1_T)_c + G_cc,         G = sum xhat xhat^T

With a running `G 1_T` a step costs O(C) and the order O(C^2); all candidates
are scored at once in one jitted `lax.fori_loop`. Ties go to the lowest index,
as in the official loop's strict `<`.

The paper's greedy scores a removed set with unit scales, but the kept
channels are rescaled by least squares afterwards. `forward_order` selects
for the error that survives least squares instead: it grows the kept set
one channel at a time, each time adding the channel whose addition lowers
the least-squares residual most (refitting all scales at every step, as the
TPAMI version's code does), from G alone: with the Schur complement
`R = G - G_:S G_SS^-1 G_S:` and the residual correlations
`beta = G 1 - G_:S G_SS^-1 (G 1)_S`, adding c lowers the residual by
`beta_c^2 / R_cc`, and both update by a rank-one step, so the whole order
costs O(C^3) in one jitted loop. Its removal order is the reverse of the
order it keeps channels in. For another target t (the unpruned model's
output, `depgraph.collect(reference=...)`) the same loop starts from
`beta = X^T t` (`cross`) instead of `G 1`.

Criteria on the centred statistics (`stats.centred_gram`, the error that
survives the consumer's bias or BatchNorm): `thinet_centred` (the paper's
greedy on Gc) and `forward_centred`.

Baselines (same result type): `random` (seeded permutation), `weight_sum`
(L1 norm of each producer filter, smallest removed first; Li et al. 2017;
in the model as pruned so far, whose earlier groups cut and rescaled the
filters' inputs), `weight_sum_original` (the same norm of the unpruned
model's filters, as Li et al. and Torch-Pruning score them),
`apoz` (average percentage of zeros of the producer's post-ReLU output,
highest removed first; Hu et al. 2016). All are looked up by name in
`CRITERIA`.

Example:

  >>> order = select.greedy_order(gram)
  >>> keep = select.keep_indices(order, select.keep_count(len(order), 0.5))
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _check_gram(gram: jax.Array) -> None:
  if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
    raise ValueError(f"gram must be a square [C, C] matrix, got {gram.shape}")
  if gram.shape[0] < 1:
    raise ValueError("gram is empty: a group needs at least one channel")


def check_symmetric(gram: Any, rtol: float = 1e-4) -> None:
  """Raises if a (concrete) Gram matrix is not symmetric to `rtol`."""
  g = np.asarray(gram, np.float64)
  _check_gram(g)
  scale = max(np.abs(g).max(), np.finfo(np.float64).tiny)
  asym = np.abs(g - g.T).max() / scale
  if not asym <= rtol:  # Also catches NaN.
    raise ValueError(
      f"gram is not symmetric (max |G - G^T| / max |G| = {asym:.2e}); a Gram "
      "matrix is sum xhat xhat^T, so this is not one"
    )


def _cross(gram: jax.Array, cross: jax.Array | None) -> jax.Array:
  """X^T t: the given cross moments, or G 1 (the target is sum_c xhat_c)."""
  if cross is None:
    return jnp.sum(gram, axis=1)
  cross = jnp.asarray(cross, gram.dtype)
  if cross.shape != gram.shape[:1]:
    raise ValueError(f"cross {cross.shape} does not match gram {gram.shape}")
  return cross


@jax.jit
def _greedy(gram: jax.Array) -> jax.Array:
  c = gram.shape[0]
  diag = jnp.diagonal(gram)

  def step(i, state):
    removed, g1t, order = state
    score = jnp.where(removed, jnp.inf, 2.0 * g1t + diag)
    pick = jnp.argmin(score)  # First minimum: ties to the lowest index.
    return (
      removed.at[pick].set(True),
      g1t + gram[:, pick],
      order.at[i].set(pick.astype(jnp.int32)),
    )

  state = (
    jnp.zeros((c,), bool),
    jnp.zeros((c,), gram.dtype),
    jnp.zeros((c,), jnp.int32),
  )
  return lax.fori_loop(0, c, step, state)[2]


def greedy_order(gram: jax.Array) -> jax.Array:
  """The paper's greedy removal order over all C channels.

  Args:
    gram: [C, C] symmetric Gram matrix of channel contributions.

  Returns:
    int32 [C]: channels in the order the greedy removes them.
  """
  gram = jnp.asarray(gram)
  _check_gram(gram)
  if not isinstance(gram, jax.core.Tracer):
    check_symmetric(gram)
  return _greedy(gram)


@jax.jit
def _forward(gram: jax.Array, cross: jax.Array) -> jax.Array:
  c = gram.shape[0]
  # Candidates whose part outside the kept span is below this are numerical
  # copies of kept ones: they add nothing (and are kept last).
  floor = jnp.finfo(gram.dtype).eps * c * jnp.max(jnp.abs(jnp.diagonal(gram)))

  def step(i, state):
    kept, schur, beta, order = state
    diag = jnp.diagonal(schur)
    usable = ~kept & (diag > floor)
    gain = jnp.where(usable, beta**2 / jnp.where(usable, diag, 1.0), -1.0)
    gain = jnp.where(kept, -jnp.inf, gain)
    pick = jnp.argmax(gain)  # First maximum: ties to the lowest index.
    column = schur[:, pick]
    pivot = jnp.where(usable[pick], column[pick], jnp.inf)
    return (
      kept.at[pick].set(True),
      schur - jnp.outer(column, column) / pivot,
      beta - column * beta[pick] / pivot,
      order.at[c - 1 - i].set(pick.astype(jnp.int32)),
    )

  state = (
    jnp.zeros((c,), bool),
    gram,
    cross,
    jnp.zeros((c,), jnp.int32),
  )
  return lax.fori_loop(0, c, step, state)[3]


def forward_order(gram: jax.Array, cross: jax.Array | None = None) -> jax.Array:
  """Removal order of forward selection with least squares refitted at
  every step (see the module doc).

  Args:
    gram: [C, C] symmetric Gram matrix (or centred Gram matrix).
    cross: [C] X^T t for another target t (`stats.GroupStats.target`);
      default G 1, the consumer's own output.

  Returns:
    int32 [C]: the reverse of the order in which channels are kept, so
    that, like every criterion, the last n entries are the kept set for n.
  """
  gram = jnp.asarray(gram)
  _check_gram(gram)
  if not isinstance(gram, jax.core.Tracer):
    check_symmetric(gram)
  return _forward(gram, _cross(gram, cross))


def keep_count(channels: int, keep_ratio: float) -> int:
  """`int(C * keep_ratio)`, at least 1 (the official code's rounding)."""
  if (
    isinstance(keep_ratio, bool)
    or not isinstance(keep_ratio, numbers.Real)
    or not 0.0 < float(keep_ratio) <= 1.0
  ):
    raise ValueError(
      "keep_ratio must be in (0, 1], a number (the fraction of channels "
      f"kept), got {keep_ratio!r}"
    )
  return max(1, int(channels * float(keep_ratio)))


def keep_indices(order: jax.Array, n_keep: int) -> jax.Array:
  """The kept channels, sorted: the last `n_keep` of a removal order."""
  c = order.shape[0]
  if not 1 <= n_keep <= c:
    raise ValueError(
      f"n_keep must be in [1, {c}] for {c} channels, got {n_keep}"
    )
  return jnp.sort(jnp.asarray(order)[c - n_keep :]).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class SelectionInputs:
  """What a criterion may look at; any field may be None if unused.

  gram: [C, C] Gram matrix of the group's contributions.
  zero_fraction: [C] APoZ of the producer's post-ReLU output.
  producer_kernel: producer kernel [kh, kw, Cin, C].
  key: PRNG key.
  centred_gram: [C, C] the centred Gram matrix (`stats.centred_gram`).
  cross, centred_cross: [C] X^T t (uncentred, centred) for a target t
    other than the consumer's own output; the forward criteria select for
    it (the paper's greedy is defined for the own output only).
  original_producer_kernel: the producer kernel of the unpruned model,
    restricted to the group's current channels ([..., C]).
  """

  gram: Any = None
  zero_fraction: Any = None
  producer_kernel: Any = None
  key: Any = None
  centred_gram: Any = None
  cross: Any = None
  centred_cross: Any = None
  original_producer_kernel: Any = None

  @classmethod
  def of(cls, group_stats: Any, producer_kernel: Any, key: Any):
    """The inputs from one group's `stats.GroupStats` (float32 Grams)."""
    centred = cross = centred_cross = None
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    if group_stats.sums is not None:
      centred_target = group_stats.target(centred=True)
      centred = f32(centred_target.gram)
      if group_stats.cross is not None:
        cross = f32(group_stats.cross)
        centred_cross = f32(centred_target.cross)
    return cls(
      gram=f32(group_stats.gram),
      zero_fraction=group_stats.zero_fraction,
      producer_kernel=producer_kernel,
      key=key,
      centred_gram=centred,
      cross=cross,
      centred_cross=centred_cross,
    )


def _need(inputs: SelectionInputs, field: str, criterion: str):
  value = getattr(inputs, field)
  if value is None:
    raise ValueError(f"criterion {criterion!r} needs SelectionInputs.{field}")
  return value


def _thinet(inputs: SelectionInputs) -> jax.Array:
  return greedy_order(_need(inputs, "gram", "thinet"))


def _thinet_centred(inputs: SelectionInputs) -> jax.Array:
  return greedy_order(_need(inputs, "centred_gram", "thinet_centred"))


def _forward_criterion(inputs: SelectionInputs) -> jax.Array:
  return forward_order(_need(inputs, "gram", "forward"), inputs.cross)


def _forward_centred(inputs: SelectionInputs) -> jax.Array:
  gram = _need(inputs, "centred_gram", "forward_centred")
  return forward_order(gram, inputs.centred_cross)


def _random(inputs: SelectionInputs) -> jax.Array:
  key = _need(inputs, "key", "random")
  n = _width(inputs)
  return jax.random.permutation(key, n).astype(jnp.int32)


def _l1_order(kernel: Any) -> jax.Array:
  kernel = jnp.asarray(kernel)
  norms = jnp.sum(jnp.abs(kernel.reshape(-1, kernel.shape[-1])), axis=0)
  return jnp.argsort(norms, stable=True).astype(jnp.int32)


def _weight_sum(inputs: SelectionInputs) -> jax.Array:
  return _l1_order(_need(inputs, "producer_kernel", "weight_sum"))


def _weight_sum_original(inputs: SelectionInputs) -> jax.Array:
  field, name = "original_producer_kernel", "weight_sum_original"
  return _l1_order(_need(inputs, field, name))


def _apoz(inputs: SelectionInputs) -> jax.Array:
  apoz = jnp.asarray(_need(inputs, "zero_fraction", "apoz"))
  return jnp.argsort(-apoz, stable=True).astype(jnp.int32)


def _width(inputs: SelectionInputs) -> int:
  for field, axis in (
    ("gram", 0),
    ("zero_fraction", 0),
    ("producer_kernel", -1),
  ):
    value = getattr(inputs, field)
    if value is not None:
      return int(np.shape(value)[axis])
  raise ValueError("random needs the channel count: pass gram or zero_fraction")


CRITERIA: dict[str, Callable[[SelectionInputs], jax.Array]] = {
  "thinet": _thinet,
  "thinet_centred": _thinet_centred,
  "forward": _forward_criterion,
  "forward_centred": _forward_centred,
  "random": _random,
  "weight_sum": _weight_sum,
  "weight_sum_original": _weight_sum_original,
  "apoz": _apoz,
}


def register_criterion(
  name: str,
  fn: Callable[[SelectionInputs], jax.Array],
  overwrite: bool = False,
) -> Callable[[SelectionInputs], jax.Array]:
  """Adds a criterion under `name` (usable as a decorator's target:
  `register_criterion("mine", fn)`); every path that takes a criterion
  name (`prune_group`, `depgraph.prune_step`, `train.prune`'s
  `--config.criterion`) then accepts it.

  Args:
    name: the criterion's name.
    fn: SelectionInputs -> int32 [C] removal order (a permutation; the
      last n entries are the kept set for n). Read only the fields you
      need (`gram`, `centred_gram`, `cross`, `zero_fraction`,
      `producer_kernel` (for a graph group: [1, C] of the producers' L1
      norms), `key`).
    overwrite: replace a criterion of the same name.
  """
  if not callable(fn):
    raise TypeError(f"criterion {name!r} must be callable, got {fn!r}")
  if name in CRITERIA and not overwrite:
    raise ValueError(
      f"criterion {name!r} exists; pass overwrite=True to replace it"
    )
  CRITERIA[name] = fn
  return fn


def choose(criterion: str, inputs: SelectionInputs, n_keep: int) -> jax.Array:
  """The `n_keep` kept channels (sorted) of a named criterion."""
  return keep_indices(removal_order(criterion, inputs), n_keep)


def removal_order(criterion: str, inputs: SelectionInputs) -> jax.Array:
  """The removal order of a named criterion (see `CRITERIA`)."""
  try:
    fn = CRITERIA[criterion]
  except KeyError:
    raise KeyError(
      f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}"
    ) from None
  return fn(inputs)
