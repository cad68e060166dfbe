"""ThiNet-Tiny analogue on the shipped VGG-16-BN/4 Fashion-MNIST baseline.

The paper's ThiNet-Tiny (section 4.1, Table 3): every conv pruned to a
quarter of VGG-16's width (16 .. 128 of 64 .. 512) except conv5_3 at half
(256 of 512), and the global-average-pooling head of ThiNet-GAP. Here the
same fractions of vgg16-fmnist's widths (4 .. 32 channels, conv5_3 64),
the head replaced first, then the 13 convs in order under the main job's
schedule (configs/fmnist_vgg16_thinet.py):

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_vgg16_thinet_tiny.py:paper \\
      --workdir runs/thinet-tiny

`:paper` is ThiNet as published; `--config.criterion=weight_sum` the same
schedule with another criterion (benchmarks/recipes.py runs the table).
"""

from configs import default, fmnist_vgg16_thinet

CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2",
         "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2",
         "conv5_3")  # fmt: skip


def get_config(arg: str | None = None):
  config = fmnist_vgg16_thinet.get_config()
  config.head = "gap"  # Global average pooling + one dense layer.
  config.groups = CONVS  # Every conv, in order.
  del config.keep_ratio  # A float field; here one ratio per group.
  config.keep_ratio = (0.25,) * 12 + (0.5,)  # ThiNet-Tiny's fractions.
  config = default.apply_arg(config, arg, prune=True)
  if arg and "runlocal" in arg.split(","):  # Its two groups.
    config.keep_ratio = (0.25, 0.25)
  return config
