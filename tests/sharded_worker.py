"""Statistics, greedy order and one training step on whatever devices and
processes this process is given; process 0 saves them (.npz).

  python tests/sharded_worker.py OUT [PROCESS_ID NUM_PROCESSES PORT]

Run by test_sharding.py: once on one device, once on 4 virtual devices
(XLA_FLAGS), and as two processes joined by `jax.distributed` over
loopback. Each process feeds only its own rows of the global batch.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from thinet_jax import depgraph, factories, select, sharding, train  # noqa: E402

from conftest import SPECS, random_variables  # noqa: E402

SIZE, BATCH = 8, 8


def main():
  out = sys.argv[1]
  if len(sys.argv) > 2:
    pid, n, port = (int(a) for a in sys.argv[2:5])
    sharding.initialize(f"127.0.0.1:{port}", n, pid)
  spec = SPECS["vgg_bn_fc"]
  variables = random_variables(spec, SIZE)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(BATCH, SIZE, SIZE, 2)).astype(np.float32)
  labels = rng.integers(0, 3, BATCH).astype(np.int32)
  share = BATCH // jax.process_count()
  rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
  local = {"image": images[rows], "label": labels[rows]}

  traced = factories.graph_of(spec, SIZE)
  result = {}
  for mode in ("sampled", "exhaustive"):
    (st,) = depgraph.collect(
      traced, variables, traced.group("conv2_1"), [{"image": local["image"]}],
      mode=mode, key=jax.random.key(3),
    ).values()  # fmt: skip
    result[f"gram_{mode}"] = st.gram
    result[f"zeros_{mode}"] = st.zero_fraction
    result[f"images_{mode}"] = st.images
    result[f"order_{mode}"] = np.asarray(select.greedy_order(st.gram))

  config = ml_collections.ConfigDict(
    dict(
      learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
      schedule="constant", warmup_epochs=0.0, num_epochs=1.0,
    )
  )  # fmt: skip
  tx = train.optimizer(config, steps_per_epoch=10)
  mesh = sharding.data_mesh()
  step = train.sharded_train_step(spec, tx, mesh)
  state = jax.device_put(
    train.create_state(variables, tx), sharding.replicated(mesh)
  )
  state, metrics = step(state, sharding.shard_batch(local, mesh))
  flat = jax.tree_util.tree_flatten_with_path(train.variables_of(state))[0]
  for path, leaf in flat:
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    result[f"var:{name}"] = np.asarray(leaf)
  result["loss"] = np.asarray(metrics["loss"])
  result["devices"] = jax.device_count()
  result["processes"] = jax.process_count()
  if sharding.is_main_process():
    np.savez(out, **result)


if __name__ == "__main__":
  main()
