"""VGG-16-BN at 1/4 width on Fashion-MNIST (padded to 32x32).

python -m train.describe --config configs/fmnist_vgg16.py --workdir runs/vgg
"""

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = "vgg16-fmnist"
  return default.apply_arg(config, arg)
