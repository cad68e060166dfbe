"""Defaults every experiment config inherits; override fields, don't copy.

Launch (any config, any field overridable on the command line):

  python -m train.describe --config configs/fmnist_vgg16.py --workdir runs/x
  python -m train.describe --config configs/fmnist_vgg16.py:runlocal \
      --workdir runs/x --config.batch_size=64
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = "vgg16-fmnist"  # Preset name (thinet_jax.presets.names()).
  config.dataset = "fashion_mnist"  # TFDS name; prepared array_record data.
  # TFDS data dir; "" = $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  config.data_dir = ""
  config.train_split = "train"  # TFDS split for training and statistics.
  config.eval_split = "test"  # TFDS split for evaluation.
  config.image_size = 32  # Input height/width; smaller images are zero-padded.
  config.batch_size = 128  # Global batch size (split over processes).
  config.eval_batches = -1  # Eval batches to run; -1 = the whole eval split.
  config.seed = 0  # Seeds init, shuffling and augmentation.
  return apply_arg(config, arg)


def apply_arg(
  config: ml_collections.ConfigDict, arg: str | None
) -> ml_collections.ConfigDict:
  """Applies the `:arg` switch of a config path; only `runlocal` exists."""
  if arg in (None, ""):
    return config
  if arg != "runlocal":
    raise ValueError(f"unknown config argument {arg!r}; use ':runlocal'")
  # Seconds, not minutes: tiny batches, a few eval batches.
  config.batch_size = 16
  config.eval_batches = 2
  return config
