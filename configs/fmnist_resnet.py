"""A small bottleneck ResNet (Caffe stride placement) on Fashion-MNIST.

python -m train.describe --config configs/fmnist_resnet.py --workdir runs/rn
"""

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = "resnet-fmnist"
  return default.apply_arg(config, arg)
