"""ThiNet-Conv with the paper's final fine-tune length (12 epochs).

The main job's recipe (configs/fmnist_vgg16_thinet.py) with the final
fine-tune stretched from 3 to 12 epochs, the length the paper gives VGG-16
after its last layer (section 4.1). About 30 minutes on 2 CPU cores:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_vgg16_thinet_long.py \\
      --workdir runs/prune-long

Other criteria under the identical schedule: add --config.criterion=weight_sum
(or random, apoz).
"""

from configs import default, fmnist_vgg16_thinet


def get_config(arg: str | None = None):
  config = fmnist_vgg16_thinet.get_config()
  config.num_epochs = 12.0  # Final fine-tune length (paper: 12 epochs).
  return default.apply_arg(config, arg, prune=True)
