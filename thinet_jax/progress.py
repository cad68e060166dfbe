"""Progress bars that read well on a terminal and in a log file.

On a terminal, `bar` is an ordinary tqdm bar. When stderr is not a
terminal (a log file, CI, `nohup`), tqdm's carriage-return redraws would
pile up as one endless line, or as hundreds of near-identical ones; there
the bar prints one plain line at most every `LOG_INTERVAL_S` seconds and
a last line when it closes, never the same line twice.
"""

from __future__ import annotations

import sys
from typing import Any

import tqdm

LOG_INTERVAL_S = 30.0


class _LineFile:
  """A file for tqdm that turns each redraw into one log line."""

  def __init__(self, stream):
    self.stream = stream
    self.last = None

  def write(self, text: str) -> None:
    line = text.replace("\r", "").rstrip()
    if not line or line == self.last:
      return
    self.last = line
    self.stream.write(line + "\n")

  def flush(self) -> None:
    self.stream.flush()


def interactive() -> bool:
  """Whether stderr is a terminal (bars redraw in place)."""
  return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def bar(iterable: Any = None, **kwargs: Any) -> tqdm.tqdm:
  """`tqdm.tqdm(iterable, **kwargs)`, log-friendly off a terminal.

  Give `total=` whenever the length is known but `iterable` has no len():
  a bar without a total shows neither a percentage nor an ETA.
  """
  if not interactive():
    kwargs.setdefault("file", _LineFile(sys.stderr))
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("ncols", 100)
  return tqdm.tqdm(iterable, **kwargs)


def minutes(seconds: float) -> str:
  """'42 s', '3.5 min' or '1.2 h'."""
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 5400:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def length(iterable: Any, limit: int | None = None) -> int | None:
  """How many items a loop over `iterable` (stopped at `limit`) will see,
  or None when neither is known."""
  try:
    n = len(iterable)
  except TypeError:
    return limit
  return n if limit is None else min(n, limit)


class Sized:
  """An iterable with a known length, for the bars: `Sized(dataset, n)`
  iterates `dataset` and tells `len()` = n (e.g. the batches a pipeline
  will give, which grain's iterable datasets do not know)."""

  def __init__(self, iterable: Any, n: int):
    self.iterable, self.n = iterable, n

  def __iter__(self):
    return iter(self.iterable)

  def __len__(self) -> int:
    return self.n
