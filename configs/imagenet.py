"""Shared by the ImageNet recipe configs (configs/imagenet_*.py).

The paper's settings (sections 4.1, 4.2) on TFDS `imagenet2012`, starting
from pretrained weights converted by `python -m train.convert`: ThiNet as
published (`configs/default.py` PAPER_METHOD), 10 images per class and 10
samples per image for the statistics (100,000 rows per group), SGD with
momentum 0.9 and weight decay 5e-4, 224x224 inputs with the source's
preprocessing. Images are resized (shorter side 256) and centre-cropped to
224, then randomly shifted by up to 4 pixels and flipped in training; the
paper's random 224 crops of 256 are not reproduced.

`:runlocal` is a smoke run of the same code path in a minute on a CPU:
32x32 inputs, batches of 4, one group (no fine-tune after it), a final
fine-tune of two steps, one statistics image per class (the model must
be converted at image size 32: `train.convert --image_size 32`; the
tests build a tiny fake `imagenet2012` in the TFDS layout).
"""

import ml_collections

from configs import default, fmnist_vgg16_thinet


def base(model: str, checkpoint: str) -> ml_collections.ConfigDict:
  config = fmnist_vgg16_thinet.get_config()  # Every train.prune field.
  config.update(default.PAPER_METHOD)
  config.model = model
  config.init_checkpoint = checkpoint  # From train.convert.
  config.dataset = "imagenet2012"
  config.train_split = "train"
  config.eval_split = "validation"
  config.image_size = 224
  config.preprocessing = "torchvision"  # "caffe" for Keras-converted weights.
  config.batch_size = 256  # Global; split over processes and devices.
  config.images_per_class = 10  # Paper: 10 images per class ...
  config.samples_per_image = 10  # ... and 10 samples per image.
  config.warmup_epochs = 0.0
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 100
  return config


def resnet50(ratio: float, arg: str | None) -> ml_collections.ConfigDict:
  """ThiNet-70 / 50 / 30 (paper section 4.2, Table 5) from ResNet-50.

  In each of the 16 bottlenecks, branch2a then branch2b kept at `ratio` of
  their width (the block's last 1x1 conv and the shortcut keep theirs),
  half an epoch of fine-tuning after each (one epoch per block, lr
  0.0001), then 9 epochs at lr 0.001 dropping 10x after epochs 3 and 6
  (the paper's lengths and per-block rate; the final rate and its drops
  are our reading). The paper pruned Caffe's ResNet-50 (stride in
  branch2a): that is `--config.model=resnet50` with Keras-converted
  weights (`train.convert --source keras`, `--config.preprocessing=caffe`);
  torchvision's places the stride in branch2b (the default here).
  """
  config = base("resnet50-torchvision", "/shared/models/resnet50")
  config.groups = ()  # The paper's: branch2a, branch2b of every block.
  config.keep_ratio = ratio
  config.finetune_epochs = 0.5  # After each group: one epoch per block.
  config.stage_end_epochs = 0.5
  config.finetune_lr = 0.0001
  config.num_epochs = 9.0  # Final fine-tune.
  config.learning_rate = 0.001
  config.schedule = "step"
  config.lr_drop_epochs = (3.0, 6.0)
  return apply_arg(config, arg)


def apply_arg(config, arg):
  """`:paper` is already the method; `:runlocal` shrinks everything."""
  config = default.apply_arg(config, arg, prune=True)
  if arg and "runlocal" in arg.split(","):
    config.image_size = 32
    config.batch_size = 4
    config.images_per_class = 1
    config.eval_batches = 1
    config.steps_per_epoch = 2
    config.num_epochs = 1.0
    # One group and no fine-tune after it: every group, and every
    # fine-tune schedule, compiles new programs of a full-width net (~15 s
    # each on 2 cores). The final fine-tune (this config's own schedule)
    # runs; the per-group one is the same code the Fashion-MNIST
    # runlocal configs run.
    config.smoke_groups = 1
    config.finetune_epochs = 0.0
    config.stage_end_epochs = 0.0
  return config
