"""One code path for one CPU, a multi-GPU machine and a multi-host pod.

JAX's SPMD engine does the work: a 1-D `data` mesh over every device of
every process (`data_mesh`), batches split along it (`shard_batch`, from
each process's own share of the data), parameters replicated. A `jit`-ed
function of such arrays is one global program: a sum over the batch (a loss,
a Gram matrix `X^T X`, zero counts) is reduced across devices and processes
by XLA, so statistics, selection and surgery see the same global numbers on
every process. Multi-host runs call `initialize` first.

Example:

  >>> mesh = sharding.data_mesh()
  >>> batch = sharding.shard_batch({"image": local_images}, mesh)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device (all hosts), axis "data"."""
  return jax.make_mesh(
    (jax.device_count(),),
    ("data",),
    axis_types=(jax.sharding.AxisType.Auto,),
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole value (parameters, statistics)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data"."""
  return NamedSharding(mesh, P("data"))


def replicate(tree: Any, mesh: jax.sharding.Mesh | None = None) -> Any:
  """Every leaf as a global array replicated over `mesh` (default: all
  devices). Each process must hold the same values (true of parameters and
  statistics here). Across processes the leaves go through the host, since
  a value computed eagerly by one process is local to it.
  """
  target = replicated(mesh or data_mesh())
  if jax.process_count() == 1:
    return jax.device_put(tree, target)

  def one(x):
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(
      host.shape, target, lambda index: host[index]
    )

  return jax.tree.map(one, tree)


def shard_batch(batch: dict[str, Any], mesh) -> dict[str, jax.Array]:
  """Process-local NumPy batch -> global arrays split over "data".

  Each process passes its own rows (its share of the global batch, in
  process order); the global batch is their concatenation. The local batch
  size must be a multiple of the process's local device count.
  """
  sharding = batch_sharded(mesh)
  local = jax.local_device_count()
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.shape[0] % local:
      raise ValueError(
        f"batch field {k!r} has {v.shape[0]} rows, not a multiple of the "
        f"{local} local devices; choose a batch size divisible by "
        f"{local * jax.process_count()} (devices of all processes)"
      )
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def default_cpu_devices(count: int = 2) -> None:
  """Splits the CPU into `count` virtual devices unless XLA_FLAGS already
  sets a count. Call before JAX starts its backends (the commands do, first
  thing). On 2 CPU cores the data-parallel step over 2 virtual devices was
  1.22x faster than one device (benchmarks/devices_speed.json); GPU and TPU
  runs ignore the flag, which only shapes the host platform.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if DEVICE_COUNT_FLAG in flags or (os.cpu_count() or 1) < count:
    return
  os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT_FLAG}={count}".strip()


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """`jax.distributed.initialize` from arguments or the environment.

  Arguments left None come from THINET_COORDINATOR, THINET_NUM_PROCESSES
  and THINET_PROCESS_ID. With neither an address nor a process count it
  does nothing, so a single-process run never waits for a coordinator; on
  a TPU pod or under SLURM pass `num_processes` (or set the variable) and
  leave the rest to JAX's cluster detection. CPU processes talk through
  gloo collectives.

  Returns:
    True if this call initialised a multi-process run.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get("THINET_COORDINATOR")
  if num_processes is None and "THINET_NUM_PROCESSES" in env:
    num_processes = int(env["THINET_NUM_PROCESSES"])
  if process_id is None and "THINET_PROCESS_ID" in env:
    process_id = int(env["THINET_PROCESS_ID"])
  if coordinator_address is None and num_processes is None:
    return False
  # Collectives between CPU processes (no effect on GPU/TPU devices).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
  )
  return True


def is_main_process() -> bool:
  """Process 0 writes reports and plots; every process saves checkpoints."""
  return jax.process_index() == 0


def main_pid() -> int:
  """Process 0's pid, on every process (names what they write together)."""
  if jax.process_count() == 1:
    return os.getpid()
  from jax.experimental import multihost_utils

  pid = np.int64(os.getpid() if is_main_process() else 0)
  return int(multihost_utils.broadcast_one_to_all(pid))


def sync(name: str) -> None:
  """Waits until every process reaches `name` (nothing on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
