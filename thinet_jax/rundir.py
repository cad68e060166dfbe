"""Run directories a user can trust: one process each, resumes that check
what they resume, writes that are never seen half done.

A long command (training, the pruning procedure) keeps everything it has
finished in its workdir, step by step, so a killed run loses at most the
step it was in. Three things make that safe:

- `lock(workdir)`: one process per workdir. The lock is an `fcntl` lock on
  `<workdir>/.lock`, which the kernel releases when its holder dies, so a
  killed run never leaves a lock that blocks the next one; the file names
  the holder (pid, host, command) for the error a second process gets.
- Fingerprints: every step directory gets a `fingerprint.json` when the
  step *starts*, holding everything that determines the step's result
  (the config fields that reach it, the starting model's hash, the library
  version). A rerun compares each finished or started step with what the
  config now says, before any work, and stops with the differing fields
  (`check_steps`), unless told to redo the steps from one of them on.
- Atomic writes: files are written to a temporary name and renamed
  (`write_json`, `write_text`); directories are built under a temporary
  name and swapped in (`replace_dir`). A reader sees the old or the new,
  never half of one. Only a directory the library wrote (it holds a
  `.thinet_jax` marker) or an empty one is ever replaced: a user's folder
  is refused, never deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

FINGERPRINT = "fingerprint.json"
# The fingerprint field holding the digest of the starting model's traced
# program (`factories.program_digest`): its change is named on its own.
PROGRAM_FIELD = "start_model_program_sha256"


class RunError(ValueError):
  """A run directory cannot be used as asked; the message says why and
  what to do instead."""


class WorkdirLockedError(RunError):
  """Another live process holds the workdir."""


class ResumeMismatchError(RunError):
  """A step in the workdir was made under other settings than the config's."""


# --- one process per workdir ---------------------------------------------


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds `<workdir>/.lock` for the duration; refuses a second holder.

  Raises:
    WorkdirLockedError: a live process holds it (its pid, host, command
      and start time are in the message).
    RunError: the workdir cannot be created or written.
  """
  ensure_writable(workdir)
  path = os.path.join(workdir, ".lock")
  f = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      try:
        holder = json.loads(f.read() or "{}")
      except json.JSONDecodeError:
        holder = {}
      raise WorkdirLockedError(
        f"{workdir} is in use by pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')} (started "
        f"{holder.get('started', '?')}: {holder.get('command', '?')}); "
        "wait for it to finish, stop it, or use another --workdir"
      ) from None
    f.seek(0)
    f.truncate()
    json.dump(
      {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
      },
      f,
    )
    f.flush()
    yield
  finally:
    f.close()  # Closing releases the lock.


def ensure_writable(workdir: str) -> None:
  """Creates `workdir` and checks a file can be written there, so an
  unwritable workdir fails before any work, not after the first step."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".probe{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise RunError(
      f"cannot write to workdir {workdir!r} ({e.strerror}); choose a "
      "--workdir you can write to"
    ) from None


# --- atomic writes ---------------------------------------------------------


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2))


def read_json(path: str) -> Any | None:
  """The JSON at `path`, or None if there is none."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


# A directory the library writes whole (a model directory) holds this
# file: only such a directory (or an empty one) is ever replaced, so a
# user's folder given by mistake as --out is refused, not deleted.
MARKER = ".thinet_jax"


def check_replaceable(
  directory: str, ours: Callable[[str], bool] | None = None
) -> None:
  """Raises RunError unless `directory` is absent, empty, or one the
  library wrote (it holds `MARKER`, or `ours(directory)` says so: a model
  directory saved before the marker existed): what `replace_dir` may
  replace. Commands call it before any work, so a wrong --out costs
  nothing."""
  if not os.path.lexists(directory):
    return
  if os.path.islink(directory) or not os.path.isdir(directory):
    raise RunError(
      f"{directory} exists and is not a directory; choose another output "
      "path or move it away yourself"
    )
  if (
    os.listdir(directory)
    and not os.path.exists(os.path.join(directory, MARKER))
    and not (ours is not None and ours(directory))
  ):
    raise RunError(
      f"{directory} is a folder this library did not write (it holds "
      f"files and no {MARKER} marker); it will not be replaced: choose "
      "another output path or empty it yourself"
    )


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale(directory: str) -> None:
  """Removes `<directory>.tmp<pid>` / `.old<pid>` siblings that a killed
  process left (the pid is gone and the folder holds the marker)."""
  parent, base = os.path.split(directory)
  for name in os.listdir(parent or "."):
    for kind in (".tmp", ".old"):
      pid = name.removeprefix(base + kind)
      if name.startswith(base + kind) and pid.isdigit():
        path = os.path.join(parent, name)
        if not _pid_alive(int(pid)) and os.path.exists(
          os.path.join(path, MARKER)
        ):
          shutil.rmtree(path, ignore_errors=True)


def temporary_path(directory: str, pid: int | None = None) -> str:
  """`<directory>.tmp<pid>`: the sibling that process `pid` (default this
  one) builds `directory` under."""
  pid = os.getpid() if pid is None else pid
  return f"{os.path.abspath(directory)}.tmp{pid}"


def temporary_dir(
  directory: str,
  pid: int | None = None,
  ours: Callable[[str], bool] | None = None,
) -> str:
  """A fresh sibling of `directory` (this process's own,
  `temporary_path`, holding `MARKER`) to build it under before
  `replace_dir`. Leftovers of killed processes are removed first.

  Raises:
    RunError: `directory` is not replaceable (`check_replaceable`).
  """
  directory = os.path.abspath(directory)
  check_replaceable(directory, ours)
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  _remove_stale(directory)
  tmp = temporary_path(directory, pid)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with open(os.path.join(tmp, MARKER), "w") as f:
    f.write("written by thinet_jax; replaced whole when saved again\n")
  return tmp


def replace_dir(
  tmp: str, directory: str, ours: Callable[[str], bool] | None = None
) -> None:
  """Swaps the finished `tmp` (from `temporary_dir`) in as `directory`,
  replacing an old one the library wrote.

  The old directory is first renamed aside, so `directory` is at every
  moment either the old one, the new one, or (between two renames) absent,
  never a mix; swaps into one parent folder take turns (a lock on the
  folder), so two processes saving to one path each leave a whole model.
  A swap killed half way leaves `<dir>.old<pid>`, which the next
  `temporary_dir` of that path removes.

  Raises:
    RunError: `directory` is not replaceable (`check_replaceable`).
  """
  directory = os.path.abspath(directory)
  fd = os.open(os.path.dirname(directory), os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    check_replaceable(directory, ours)
    old = None
    if os.path.lexists(directory):
      old = f"{directory}.old{os.getpid()}"
      shutil.rmtree(old, ignore_errors=True)
      os.rename(directory, old)
    os.rename(tmp, directory)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    os.close(fd)  # Closing releases the lock.


# --- fingerprints -------------------------------------------------------------


def tree_hash(tree: Any) -> str:
  """sha256 of a pytree of arrays: every leaf's path, dtype, shape and
  bytes, so two models hash equal exactly when their values are equal."""
  import jax

  digest = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{value.dtype}{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def jsonable(obj: Any) -> Any:
  """`obj` with tuples as lists and NumPy scalars as Python numbers, the
  form it has after a JSON round trip (so stored and fresh compare)."""
  return json.loads(json.dumps(obj, default=_default))


def _default(x):
  if isinstance(x, np.generic):
    return x.item()
  raise TypeError(f"not JSON-serialisable: {x!r}")


def differences(stored: Any, now: Any, prefix: str = "") -> list[str]:
  """Human-readable `field: old -> new` lines where two JSON values differ."""
  if isinstance(stored, dict) and isinstance(now, dict):
    out = []
    for k in sorted(set(stored) | set(now), key=str):
      name = f"{prefix}.{k}" if prefix else str(k)
      if k not in stored:
        out.append(f"{name}: (absent) -> {now[k]!r}")
      elif k not in now:
        out.append(f"{name}: {stored[k]!r} -> (absent)")
      else:
        out += differences(stored[k], now[k], name)
    return out
  if (
    isinstance(stored, list)
    and isinstance(now, list)
    and len(stored) == len(now)
  ):
    return [
      line
      for i, (a, b) in enumerate(zip(stored, now, strict=True))
      for line in differences(a, b, f"{prefix}[{i}]")
    ]
  if stored != now:
    return [f"{prefix or '(value)'}: {stored!r} -> {now!r}"]
  return []


@dataclasses.dataclass(frozen=True)
class Step:
  """One resumable step of a command.

  name: what `restart_from` calls it ("head", "conv2_1", "final").
  fingerprint: the step's `fingerprint.json` path.
  determinants: everything that determines its result (JSON-ready).
  paths: what a restart from this step deletes (its directory, its files).
  """

  name: str
  fingerprint: str
  determinants: dict[str, Any]
  paths: tuple[str, ...]


def step_in(directory: str, name: str, determinants: dict[str, Any]) -> Step:
  """A step living in its own directory (fingerprint inside it)."""
  return Step(
    name, os.path.join(directory, FINGERPRINT), determinants, (directory,)
  )


def claim_step(fingerprint: str, determinants: dict[str, Any]) -> None:
  """Marks a step as started under `determinants` (before its work), or
  checks that an earlier start was under the same ones.

  Args:
    fingerprint: the step's fingerprint file (`<step dir>/fingerprint.json`).
    determinants: JSON-ready; compared after a JSON round trip.

  Raises:
    ResumeMismatchError: the step was started under other settings.
  """
  now = jsonable(determinants)
  stored = read_json(fingerprint)
  if stored is None:
    write_json(fingerprint, now)
    return
  diff = differences(stored, now)
  if diff:
    raise ResumeMismatchError(_mismatch_message(fingerprint, diff, None))


def check_steps(
  steps: Sequence[Step],
  restart_from: str = "",
  later: Sequence[str] = (),
) -> None:
  """Checks a workdir's steps against the config before any work.

  Args:
    steps: every resumable step, in the order the command runs them.
    restart_from: "" (resume what matches, stop at what does not), or the
      name of a step (or "start") from which to discard and redo: that
      step's and every later step's paths and `later` are deleted first;
      the steps before it must still match.
    later: outputs written after the last step (the model, the report),
      deleted with a restart.

  Raises:
    ResumeMismatchError: a started step differs from what the config says;
      the message names the step, the differing fields and the ways on.
    RunError: `restart_from` names no step.
  """
  names = [s.name for s in steps]
  if restart_from and restart_from != "start" and restart_from not in names:
    raise RunError(
      f"config.restart_from={restart_from!r} names no step of this run; "
      f"its steps: start, {', '.join(names)}"
    )
  first = 0 if restart_from == "start" else None
  for i, step in enumerate(steps):
    if step.name == restart_from:
      first = i
    if first is not None:
      break
    stored = read_json(step.fingerprint)
    if stored is None:
      continue
    diff = differences(stored, jsonable(step.determinants))
    if diff:
      raise ResumeMismatchError(
        _mismatch_message(os.path.dirname(step.fingerprint), diff, step.name)
      )
  if first is None:
    return
  for path in [p for step in steps[first:] for p in step.paths] + [*later]:
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
      os.remove(path)


def _mismatch_message(where: str, diff: list[str], name: str | None) -> str:
  if any(d.startswith(PROGRAM_FIELD) for d in diff):
    step = f"step {name!r}" if name else "this step"
    return (
      f"{where}: the model's computation changed since {step} was made "
      "(its traced program differs: the factory's code, its arguments or "
      "the library changed); restore the code it was made with to resume, "
      "or start over under the new code: a new --workdir, or "
      "--config.restart_from=start"
    )
  shown = "; ".join(diff[:6])
  if len(diff) > 6:
    shown += f"; and {len(diff) - 6} more"
  step = f"step {name!r}" if name else "this step"
  redo = (
    f", or redo it and every later step with --config.restart_from={name}"
    if name
    else ""
  )
  return (
    f"{where}: {step} was made under other settings than this run's "
    f"(stored -> now: {shown}); rerun with the stored settings to resume, "
    f"use a new --workdir{redo}"
  )


# --- wall time over invocations ----------------------------------------------


class WallClock:
  """Wall time of a run over all its invocations, kept in
  `<workdir>/wall_time.json`: a resumed run reports the total as well as
  the last invocation. `tick()` (after each finished step) stores the total
  so far, so a killed invocation's time up to its last step is counted."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "wall_time.json")
    stored = read_json(self.path) or {"total_s": 0.0, "invocations": 0}
    self.before = float(stored["total_s"])
    self.invocations = int(stored["invocations"]) + 1
    self.start = time.time()

  def summary(self) -> dict[str, float]:
    last = time.time() - self.start
    return {
      "total_s": self.before + last,
      "last_s": last,
      "invocations": self.invocations,
    }

  def tick(self) -> dict[str, float]:
    out = self.summary()
    write_json(self.path, out)
    return out
