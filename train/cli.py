"""The commands' command-line shell: flags, the shared preamble, errors as
one line.

`define_flags` declares --config (a configs/*.py file, optionally
':runlocal') and --workdir; `start` is every command's preamble; `run` is
`absl.app.run` with usage and input errors printed as one line (the
traceback with --traceback). `train.common` re-exports every name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import ml_collections
from ml_collections import config_flags

from thinet_jax import sharding


def define_flags():
  """--config (a configs/*.py file, optionally ':runlocal', any field
  overridable as --config.field=value) and --workdir, both required."""
  from absl import flags

  config = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), optionally ':runlocal'."
  )
  workdir = flags.DEFINE_string("workdir", None, "Run directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  # Multi-process (multi-host) runs; also THINET_COORDINATOR,
  # THINET_NUM_PROCESSES, THINET_PROCESS_ID (see sharding.initialize).
  flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process)."
  )
  flags.DEFINE_integer("num_processes", None, "Number of processes.")
  flags.DEFINE_integer("process_id", None, "This process's index.")
  flags.DEFINE_bool(
    "traceback", False, "On a usage or input error, show the Python "
    "traceback instead of one line.",
  )  # fmt: skip
  return config, workdir


def start(argv) -> tuple[ml_collections.ConfigDict, str, float]:
  """Shared preamble of the commands: (config, workdir, start time)."""
  from absl import app, flags

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_logging()
  sharding.default_cpu_devices()
  f = flags.FLAGS
  sharding.initialize(f.coordinator_address, f.num_processes, f.process_id)
  return f.config, f.workdir, time.time()


# Errors a user can fix from the message alone: printed as one line (the
# traceback with --traceback). Anything else is a bug and keeps its trace.
USER_ERRORS = (
  ValueError,  # Config, spec, checkpoint and data errors (and subclasses).
  KeyError,  # Unknown groups, criteria.
  FileNotFoundError,  # Missing model directories, datasets, weights.
  FloatingPointError,  # NaN/inf, with the tensor named.
  OSError,  # A full or read-only disk, a path that is a file: the OS's words.
)


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, with usage and input errors as one line.

  A mistyped config field, a bad value or a missing file ends the command
  with `<command>: error: <what is wrong and how to fix it>` and exit
  status 2, instead of a traceback; `--traceback` shows the traceback.
  """
  import sys

  from absl import app, flags

  path = os.path.abspath(sys.argv[0]).removesuffix(".py")
  parent, command = os.path.split(path)
  if os.path.basename(parent) == "train":  # python -m train.prune
    command = f"train.{command}"

  def fail(message: str) -> None:
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(2)

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except SystemExit:  # absl's --help exits 1 after printing: a success.
      helps = ("--help", "-h", "-?", "--helpshort", "--helpfull")
      if any(a.split("=")[0] in helps for a in argv[1:]):
        sys.exit(0)
      raise
    except flags.Error as e:
      fail(f"{e}; see --help")
    except AttributeError as e:  # ml_collections: an unknown config field.
      fail(_unknown_field(e, argv))
    except (ValueError, TypeError) as e:
      fail(f"{e}; see --help")

  def guarded(argv):
    try:
      main(argv)
    except app.UsageError as e:
      if flags.FLAGS.traceback:
        raise
      fail(str(e))
    except USER_ERRORS as e:
      if flags.FLAGS.traceback:
        raise
      fail(one_line(e))

  app.run(guarded, flags_parser=parse)


def one_line(error: BaseException) -> str:
  text = error.args[0] if len(error.args) == 1 else str(error)
  return " ".join(str(text).split())


def _unknown_field(error: AttributeError, argv) -> str:
  """'--config.keep_ratoi: no such config field; did you mean ...'."""
  import re

  text = one_line(error).strip("'\"")
  field = re.match(r"\\?'?(\w+)", text)
  name = field.group(1) if field else "?"
  flag = next((a.split("=")[0] for a in argv if f".{name}" in a), name)
  hint = re.search(r'Did you mean "(\w+)"', text)
  suggestion = f'; did you mean "{hint.group(1)}"?' if hint else ""
  return (
    f"{flag}: the config has no field {name!r}{suggestion} (the fields "
    "and their meaning are in the config file and configs/default.py)"
  )


def quiet_logging() -> None:
  """Orbax logs every checkpoint step at INFO; keep the console readable
  unless --verbosity was given."""
  from absl import flags, logging

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
