"""Defaults every experiment config inherits; override fields, don't copy.

Launch (any config, any field overridable on the command line):

  python -m train.main --config configs/fmnist_vgg16.py --workdir runs/x
  python -m train.main --config configs/fmnist_vgg16.py:runlocal \
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
  # Input preprocessing: "" (the dataset's own normalisation, RGB),
  # "torchvision" (RGB, ImageNet mean/std) or "caffe" (BGR, ImageNet mean
  # subtracted, [0, 255]): what a model imported by thinet_jax.interop
  # expects (torchvision's / Keras's, Caffe's).
  config.preprocessing = ""
  # Your own (mean, std) per channel in [0, 1] units, overriding the
  # preprocessing's, e.g. '--config.normalization=((0.286,),(0.353,))';
  # () = the preprocessing's own.
  config.normalization = ()
  config.image_size = 32  # Input height/width; smaller images are zero-padded.
  # Train augmentation: zero padding before the random crop, in pixels.
  config.crop_pad = 4
  config.batch_size = 128  # Global batch size (split over processes).
  config.eval_batches = -1  # Eval batches to run; -1 = the whole eval split.
  config.seed = 0  # Seeds init, shuffling and augmentation.
  # Training (train.main) and fine-tuning (train.prune).
  config.init_checkpoint = ""  # Model checkpoint dir to start from; "" = init.
  config.num_epochs = 30.0  # Length of training, in epochs.
  config.steps_per_epoch = -1  # -1 = train examples // batch_size.
  config.learning_rate = 0.05  # Peak learning rate (after warm-up).
  config.momentum = 0.9  # SGD momentum.
  config.nesterov = True  # Nesterov momentum.
  config.weight_decay = 5e-4  # L2 weight decay on conv and dense kernels.
  # Decay every parameter (biases, BatchNorm too), as PyTorch's SGD does.
  config.decay_all = False
  config.schedule = "cosine"  # "cosine", "step" or "constant".
  config.warmup_epochs = 1.0  # Linear warm-up from 0, in epochs.
  config.lr_drop_epochs = ()  # "step" schedule: epochs where lr drops.
  config.lr_drop_factor = 0.1  # "step" schedule: factor of each drop.
  config.eval_every_epochs = 1  # Evaluate every this many epochs.
  config.checkpoint_every_steps = 200  # Also checkpoint at every epoch end.
  config.log_every_steps = 50  # Metrics line (JSONL) every this many steps.
  # Resuming a workdir whose steps were made under other settings: "" (stop
  # and name the differing fields), or the step to redo from, with all
  # after it ("start", a group name, "head", "allocation", "final", or
  # "train" for train.main).
  config.restart_from = ""
  # train.prune / train.sweep: with config.groups empty, prune only this
  # many of the model's groups (0 = all of them): a preset's first group of
  # each of its first n stages, any other model's first n groups.
  # `:runlocal` sets 2.
  config.smoke_groups = 0
  return apply_arg(config, arg)


# ThiNet as published (train.prune configs, `:paper`): the paper's greedy
# and least squares on the current model's output, nothing added.
PAPER_METHOD = {
  "criterion": "thinet",
  "least_squares": True,
  "centred": False,
  "bn_batches": 0,
  "distill_weight": 0.0,
  "distill_features": 0.0,
  "target": "current",
  "refit": "scales",
}


def apply_arg(
  config: ml_collections.ConfigDict, arg: str | None, prune: bool = False
) -> ml_collections.ConfigDict:
  """Applies the `:arg` switches of a config path, comma-separated:
  `runlocal` (seconds-long smoke run) and, for train.prune configs, `paper`
  (ThiNet as published, `PAPER_METHOD`)."""
  if arg in (None, ""):
    return config
  known = ("runlocal", "paper") if prune else ("runlocal",)
  parts = arg.split(",")
  unknown = [p for p in parts if p not in known]
  if unknown:
    raise ValueError(
      f"unknown config argument {unknown[0]!r}; use "
      + " or ".join(f"':{k}'" for k in known)
    )
  if "paper" in parts:
    config.update(PAPER_METHOD)
  if "runlocal" not in parts:
    return config
  if prune:  # Two small groups, a few images, a few steps each.
    config.smoke_groups = 2
    config.images_per_class = 2
    config.finetune_epochs = 1.0
    config.stage_end_epochs = 1.0
  # Seconds, not minutes: tiny batches, a few eval batches.
  config.batch_size = 16
  config.eval_batches = 2
  config.num_epochs = 2.0
  config.steps_per_epoch = 3
  config.warmup_epochs = 0.0
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  return config
