"""Test helpers for pretrained-weight import: the PyTorch models in
torchvision's module layout (benchmarks/torch_models.py, re-exported), and
a fake `imagenet2012` in its TFDS layout."""

import io

import numpy as np
from tensorflow_datasets.datasets.imagenet2012 import (
  imagenet2012_dataset_builder as imagenet,
)

from benchmarks.torch_models import (  # noqa: F401 (the tests' names)
  VGG16_CFG,
  TorchBottleneck,
  TorchResNet,
  TorchVGG,
  fmnist,
  full_size,
  random_state_dict,
)


class FakeImagenet(imagenet.Builder, skip_registration=True):
  """`imagenet2012` with its TFDS name, version and features, filled with
  a few random JPEGs per class of the first `classes` classes, so the data
  source reads it back as ImageNet."""

  name = "imagenet2012"  # Not the class name: read back as ImageNet.
  # TFDS reads the description and citation beside the builder's module.
  __module__ = imagenet.__name__

  def __init__(self, *, classes=3, per_class=2, size=(40, 52), **kwargs):
    self._fake = (classes, per_class, size)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {
      "train": self._fake_examples(0),
      "validation": self._fake_examples(1),
    }

  def _fake_examples(self, seed):
    from PIL import Image

    classes, per_class, (h, w) = self._fake
    rng = np.random.default_rng(seed)
    for c in range(classes):
      for i in range(per_class):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="jpeg")
        key = f"c{c}_{i}"
        yield (
          key,
          {"image": buffer.getvalue(), "label": c, "file_name": f"{key}.JPEG"},
        )


def prepare_fake_imagenet(data_dir: str, **kwargs) -> None:
  builder = FakeImagenet(data_dir=data_dir, **kwargs)
  builder.download_and_prepare(file_format="array_record")
