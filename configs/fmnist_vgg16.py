"""VGG-16-BN at 1/4 width on Fashion-MNIST (padded to 32x32).

python -m train.describe --config configs/fmnist_vgg16.py --workdir runs/vgg
"""

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = "vgg16-fmnist"
  # Trains to >= 93% test accuracy in 15 epochs (~55 min on 2 CPU cores
  # with XLA_FLAGS=--xla_force_host_platform_device_count=2).
  config.num_epochs = 15.0
  config.learning_rate = 0.05
  return default.apply_arg(config, arg)
