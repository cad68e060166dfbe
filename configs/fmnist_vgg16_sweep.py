"""Ratio sweep of the selection criteria on the shipped VGG-16-BN/4.

conv1_1 .. conv4_3 pruned together at each keep ratio, every criterion,
accuracy before fine-tuning against FLOPs (the paper's comparison of
selection methods, in one vmapped evaluation per criterion):

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.sweep --config configs/fmnist_vgg16_sweep.py \\
      --workdir runs/sweep
"""

from configs import default, fmnist_vgg16


def get_config(arg: str | None = None):
  config = fmnist_vgg16.get_config()
  config.init_checkpoint = "baselines/vgg16-fmnist"  # The shipped baseline.
  config.groups = ()  # Groups pruned together; () = the paper's choice.
  config.keep_ratios = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # One variant each.
  config.criteria = ("thinet", "weight_sum", "apoz", "random")  # One line each.
  config.allocated = True  # Also ThiNet with allocated per-group counts.
  config.least_squares = True  # Rescale kept channels (paper eq. 6).
  config.ridge = 0.0  # Ridge term of the least squares.
  config.stats_mode = "sampled"  # "sampled" (paper) or "exhaustive".
  config.images_per_class = 100  # Statistics images per class (paper: 10).
  config.samples_per_image = 10  # (position, channel) samples per image.
  config.finetune_steps = 0  # vmapped fine-tune of all variants; 0 = none.
  config.finetune_lr = 0.005  # Its constant learning rate.
  return apply_arg(config, arg)


def apply_arg(config, arg):
  config = default.apply_arg(config, arg)
  if arg == "runlocal":  # Two groups, a few images, two ratios.
    config.smoke_groups = 2
    config.keep_ratios = (0.5, 0.75)
    config.images_per_class = 2
    config.finetune_steps = 2
  return config
