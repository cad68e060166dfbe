"""ThiNet-70 / 50 / 30 analogues on the shipped resnet-fmnist baseline.

The paper's ResNet-50 recipe (section 4.2) at CPU scale: in each of the six
bottleneck blocks, branch2a then branch2b pruned to `keep_ratio` of their
width (0.7, 0.5, 0.3 for ThiNet-70 / 50 / 30), each followed by a short
fine-tune, then a final fine-tune; the last 1x1 conv of a block and the
shortcut keep their width (the residual sum needs it). The schedule is the
VGG main job's (configs/fmnist_vgg16_thinet.py), so the two compare:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_resnet_thinet.py:paper \\
      --workdir runs/resnet-thinet50 --config.keep_ratio=0.5

`:paper` is ThiNet as published; without it the library's default method;
`--config.criterion=weight_sum` compares a criterion under the same schedule
(benchmarks/recipes.py runs the table).
"""

from configs import default, fmnist_vgg16_thinet


def get_config(arg: str | None = None):
  config = fmnist_vgg16_thinet.get_config()
  config.model = "resnet-fmnist"
  config.init_checkpoint = "baselines/resnet-fmnist"  # The shipped baseline.
  config.groups = ()  # () = the paper's: branch2a, branch2b of every block.
  config.keep_ratio = 0.5  # ThiNet-50; 0.7 and 0.3 for ThiNet-70 / 30.
  return default.apply_arg(config, arg, prune=True)
