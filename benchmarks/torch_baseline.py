"""Trains the PyTorch baselines of benchmarks/peer.py (resumable).

  python benchmarks/torch_baseline.py --model vgg16-fmnist   # ~25 min
  python benchmarks/torch_baseline.py --model resnet-fmnist

The PyTorch twin of the preset (`benchmarks/torch_models.fmnist`, PyTorch's
own initialisation) trained the way a PyTorch user would, on the library's
batches: SGD with Nesterov momentum 0.9, weight decay 5e-4 on every
parameter, lr 0.05 with a 1-epoch linear warm-up and a per-step cosine,
15 epochs of 468 batches of 128 (the schedule of the library's own
baselines, configs/fmnist_vgg16.py). Writes `<out>/<model>.safetensors`
(the state dict, what `interop.from_torchvision` reads) and
`<out>/<model>.report.json` (test accuracy after every epoch, the config,
wall time, versions). Checkpoints every epoch to `--workdir`; killed, the
same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import torch_models, torch_side  # noqa: E402
from configs import default  # noqa: E402


def config():
  """The library's baseline schedule (configs/fmnist_vgg16.py)."""
  c = default.get_config()
  c.num_epochs = 15.0
  c.learning_rate = 0.05
  return c


def main() -> None:
  import importlib.metadata

  import torch
  from safetensors.torch import save_file

  from thinet_jax import report as report_lib

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--model", default="vgg16-fmnist", choices=["vgg16-fmnist", "resnet-fmnist"]
  )
  parser.add_argument("--out", default=str(ROOT / "baselines" / "torch"))
  parser.add_argument("--workdir", default="runs/torch_baseline")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--epochs", type=float, default=None)
  args = parser.parse_args()  # fmt: skip
  c = config()
  if args.epochs is not None:
    c.num_epochs = args.epochs
  work = pathlib.Path(args.workdir) / args.model
  work.mkdir(parents=True, exist_ok=True)
  torch.manual_seed(args.seed)
  model = torch_models.fmnist(args.model)
  start = time.time()
  model, history = torch_side.fit(
    model, c, data_seed=args.seed, seed=args.seed, decay="all",
    checkpoint=str(work / "checkpoint.pt"), evaluate_every_epoch=True,
    desc=f"train {args.model}",
  )  # fmt: skip
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  save_file(
    {k: v.contiguous() for k, v in model.state_dict().items()},
    str(out / f"{args.model}.safetensors"),
  )
  report = {
    "model": args.model,
    "accuracy": history[-1]["accuracy"],
    "history": history,
    "config": c.to_dict(),
    "decay": "all",
    "seed": args.seed,
    "command": "python benchmarks/torch_baseline.py " + " ".join(sys.argv[1:]),
    "wall_s_this_run": time.time() - start,
    "torch": torch.__version__,
    "torch_pruning": importlib.metadata.version("torch-pruning"),
    "machine": report_lib.machine(),
  }
  path = out / f"{args.model}.report.json"
  path.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{args.model}: test accuracy {report['accuracy']:.4f} -> {path}")


if __name__ == "__main__":
  main()
