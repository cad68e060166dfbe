"""ThiNet-GAP analogue on the shipped VGG-16-BN/4 Fashion-MNIST baseline.

The paper's ThiNet-GAP (section 4.1, Table 3): ThiNet-Conv's pruned convs
with the fully connected head replaced by global average pooling over
conv5_3's map (pool5 dropped) and one dense layer. Here the head goes
first (fitted by least squares to the old logits, then a 0.2-epoch
fine-tune), then conv1_1 .. conv4_3 to half width under the main job's
schedule (configs/fmnist_vgg16_thinet.py):

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_vgg16_thinet_gap.py:paper \\
      --workdir runs/thinet-gap

`:paper` is ThiNet as published; `--config.criterion=weight_sum` the same
schedule with another criterion (benchmarks/recipes.py runs the table).
"""

from configs import default, fmnist_vgg16_thinet


def get_config(arg: str | None = None):
  config = fmnist_vgg16_thinet.get_config()
  config.head = "gap"  # Global average pooling + one dense layer.
  return default.apply_arg(config, arg, prune=True)
