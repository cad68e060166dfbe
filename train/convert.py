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

from thinet_jax import interop, profile, train


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
  args = parser.parse_args(argv)  # fmt: skip
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
