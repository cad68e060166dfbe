"""ThiNet-Conv with the paper's final fine-tune length (12 epochs).

The main job's recipe (configs/fmnist_vgg16_thinet.py) with longer
fine-tunes: a quarter epoch after each group (half at the end of a stage)
and a final fine-tune of 12 epochs, the length the paper gives VGG-16 after
its last layer (section 4.1). About 45 minutes on 2 CPU cores for ThiNet
as published (`:paper`; the README's 12-epoch criteria table):

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
  python -m train.prune --config configs/fmnist_vgg16_thinet_long.py:paper \\
      --workdir runs/prune-long

Other criteria under the identical schedule: add --config.criterion=weight_sum
(or random, apoz). Without `:paper`, the library's default method (see
configs/fmnist_vgg16_thinet.py).
"""

from configs import default, fmnist_vgg16_thinet


def get_config(arg: str | None = None):
  config = fmnist_vgg16_thinet.get_config()
  config.finetune_epochs = 0.25  # After each group, in epochs.
  config.stage_end_epochs = 0.5  # After the last group of a stage.
  config.num_epochs = 12.0  # Final fine-tune length (paper: 12 epochs).
  return default.apply_arg(config, arg, prune=True)
