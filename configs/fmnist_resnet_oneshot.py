"""One-shot ThiNet-50 analogue: the one-shot budget on the ResNet.

branch2a and branch2b of every block of the shipped resnet-fmnist baseline
pruned to half width in one pass, then exactly 2 epochs of fine-tuning, the
schedule of configs/fmnist_vgg16_oneshot.py:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_resnet_oneshot.py \\
      --workdir runs/resnet-oneshot
"""

from configs import default, fmnist_resnet_thinet, fmnist_vgg16_oneshot


def get_config(arg: str | None = None):
  config = fmnist_vgg16_oneshot.oneshot(fmnist_resnet_thinet.get_config())
  return default.apply_arg(config, arg, prune=True)
