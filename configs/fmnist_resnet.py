"""A small bottleneck ResNet (Caffe stride placement) on Fashion-MNIST.

Trains the shipped `baselines/resnet-fmnist` (15 epochs, 92.31%; 63 minutes
on 2 CPU cores, part of them shared with the test suite):

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.main --config configs/fmnist_resnet.py \\
      --workdir runs/resnet-fmnist
"""

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = "resnet-fmnist"
  config.num_epochs = 15.0
  config.learning_rate = 0.05
  return default.apply_arg(config, arg)
