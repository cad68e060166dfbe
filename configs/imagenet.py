"""Shared by the ImageNet recipe configs (configs/imagenet_*.py).

The paper's settings (sections 4.1, 4.2) on TFDS `imagenet2012`, starting
from pretrained weights converted by `python -m train.convert`: ThiNet as
published (`configs/default.py` PAPER_METHOD), 10 images per class and 10
samples per image for the statistics (100,000 rows per group), SGD with
momentum 0.9 and weight decay 5e-4, 224x224 inputs with the source's
preprocessing. Images are resized (shorter side 256) and centre-cropped to
224, then randomly shifted by up to 4 pixels and flipped in training; the
paper's random 224 crops of 256 are not reproduced.

`:runlocal` is a smoke run of the same code path in minutes on a CPU:
32x32 inputs, batches of 4, two groups, a few steps, one statistics image
per class (the model must be converted at image size 32:
`train.convert --image_size 32`; the tests build a tiny fake
`imagenet2012` in the TFDS layout).
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
    if config.model.startswith("resnet"):  # default's are VGG names
      config.groups = ("res2a/branch2a", "res2a/branch2b")
  return config
