"""One-shot ThiNet-Conv: the budget a one-shot pruning library gets.

conv1_1 .. conv4_3 of the shipped VGG-16-BN/4 baseline pruned to half width
in one pass, with no fine-tuning between groups, then exactly 2 epochs of
fine-tuning (SGD, momentum 0.9, weight decay 5e-4, lr 0.01 cosine to 0,
batch 128, the standard augmentation). Budget (i) of the ablation
(benchmarks/ablation.py). The pruning pass took 5-6 minutes on 2 CPU cores
(shared with another run); the 2 epochs come on top:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_vgg16_oneshot.py \\
      --workdir runs/oneshot
"""

import ml_collections

from configs import default, fmnist_vgg16_thinet


def oneshot(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The one-shot budget on top of a train.prune config."""
  config.finetune_epochs = 0.0  # No fine-tuning between groups.
  config.stage_end_epochs = 0.0
  config.num_epochs = 2.0  # The only fine-tune.
  config.learning_rate = 0.01
  config.schedule = "cosine"
  config.warmup_epochs = 0.0
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.batch_size = 128
  return config


def get_config(arg: str | None = None):
  config = oneshot(fmnist_vgg16_thinet.get_config())
  return default.apply_arg(config, arg, prune=True)
