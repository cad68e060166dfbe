"""Pretrained weights (PyTorch / Keras files) -> a model directory.

  python -m train.convert --source torchvision --arch vgg16 \\
      --weights vgg16.safetensors --out checkpoints/vgg16
  python -m train.convert --source keras --arch resnet50 \\
      --weights resnet50_weights_tf_dim_ordering_tf_kernels.h5 \\
      --out checkpoints/resnet50-keras

The directory is what `train.prune` / `train.main` take as
`--config.init_checkpoint` (`thinet_jax.train.load_model` reads it). The
converter checks every tensor against the architecture first and names the
first that does not fit. A `.pth` is read with
`torch.load(weights_only=True)` only (a pickle can run code); prefer
`.safetensors`, which needs no torch. Run the model with its source's
preprocessing: `--config.preprocessing=torchvision` for torchvision weights,
`caffe` for Keras's (printed at the end).
"""

import argparse
import os
import sys

from thinet_jax import interop, profile, train
from train.cli import USER_ERRORS, one_line


def check(args: argparse.Namespace) -> None:
  """Every argument checked before the weights are read (ValueError or
  FileNotFoundError naming the argument and the fix)."""
  if args.image_size < 1:
    raise ValueError(
      f"--image_size must be a positive number of pixels, got {args.image_size}"
    )
  if args.source == "torchvision":
    interop.torchvision_spec(args.arch)
  else:
    interop.keras_spec(args.arch)
  if not os.path.isfile(args.weights):
    what = "is a directory" if os.path.isdir(args.weights) else "not found"
    raise FileNotFoundError(
      f"--weights {args.weights!r}: {what}; pass the weights file "
      "(.safetensors, .pth, .pt or .h5)"
    )
  train.check_destination(args.out)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--source", choices=["torchvision", "keras"], required=True
  )
  parser.add_argument(
    "--arch",
    required=True,
    help="torchvision: vgg16, vgg16_bn, resnet50; keras: vgg16, resnet50",
  )
  parser.add_argument(
    "--weights",
    required=True,
    help=".safetensors / .pth / .pt (torchvision), .h5",
  )
  parser.add_argument("--out", required=True, help="model directory")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument(
    "--traceback",
    action="store_true",
    help="show the Python traceback of an input error instead of one line",
  )
  args = parser.parse_args(argv)  # fmt: skip
  try:
    check(args)
    _convert(args)
  except USER_ERRORS as e:
    if args.traceback:
      raise
    print(f"train.convert: error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)


def _convert(args: argparse.Namespace) -> None:
  convert = (
    interop.from_torchvision if args.source == "torchvision"
    else interop.from_keras
  )  # fmt: skip
  spec, variables = convert(args.weights, args.arch, args.image_size)
  preprocessing = interop.SOURCE_PREPROCESSING[args.source]
  train.save_model(
    args.out, spec, variables, args.image_size,
    extra={"source": args.source, "arch": args.arch,
           "weights": args.weights, "preprocessing": preprocessing},
  )  # fmt: skip
  count = profile.count(spec, args.image_size)
  print(
    f"{args.weights} -> {args.out}: {count['params']:,} params, "
    f"{profile.human(count['flops'])} FLOPs at {args.image_size}x"
    f"{args.image_size}; run it with --config.preprocessing={preprocessing}"
  )


if __name__ == "__main__":
  main()
