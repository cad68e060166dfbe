"""Input pipelines: TFDS array_record data sources read with grain.

No TensorFlow is needed anywhere: datasets are prepared into array_record files
and read through `tfds.data_source`, whose records are decoded to NumPy, then
shuffled, batched and augmented by a `grain` dataset.

Sources on disk (preparing Fashion-MNIST offline from its Debian package,
TFDS data sources, decoded-array caches, labels) live in
`thinet_jax.sources`; this module re-exports them and builds the grain
pipelines over them.

Example:

  >>> from thinet_jax import data
  >>> ds = data.dataset("fashion_mnist", "train", batch_size=128,
  ...                   image_size=32, train=True, seed=0)
  >>> batch = next(iter(ds))
  >>> batch["image"].shape, batch["label"].shape   # f32 and i32
  ((128, 32, 32, 1), (128,))
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from thinet_jax.sources import (  # noqa: F401 (data's public names)
  DEBIAN_FASHION_MNIST_DIR,
  ArraySource,
  DatasetNotFoundError,
  FashionMNIST,
  Subset,
  _cache_path,
  arrays,
  class_balanced,
  default_data_dir,
  is_small,
  labels,
  load_arrays,
  num_classes,
  prepare_fashion_mnist,
  read_idx_gz,
  source,
)

# Per-channel mean and std of the training images in [0, 1]; used to normalise.
NORMALIZATION: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  "fashion_mnist": ((0.2860,), (0.3530,)),
  "mnist": ((0.1307,), (0.3081,)),
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


# A converted model is only right with its source's preprocessing
# (`thinet_jax.interop`): name -> channel order and (mean, std) per channel
# in [0, 1] units, applied after the order is set.
PREPROCESSING: Mapping[str, dict[str, Any]] = {
  # torchvision: RGB scaled to [0, 1], normalised by the ImageNet statistics.
  "torchvision": {
    "channels": "rgb",
    "normalization": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
  },
  # Caffe, Keras VGG16 / ResNet50: BGR in [0, 255] minus the ImageNet mean
  # (B, G, R), unscaled: mean / 255 and std 1 / 255 in [0, 1] units.
  "caffe": {
    "channels": "bgr",
    "normalization": (
      (103.939 / 255, 116.779 / 255, 123.68 / 255),
      (1 / 255,) * 3,
    ),
  },
}


def preprocessing_of(
  name: str, dataset_name: str
) -> tuple[bool, tuple[tuple[float, ...], tuple[float, ...]]]:
  """(reverse the channels to BGR, (mean, std)) of a preprocessing name:
  "" is the dataset's own normalisation (`NORMALIZATION`), RGB."""
  if name == "":
    if dataset_name not in NORMALIZATION:
      raise ValueError(
        f"no normalisation known for {dataset_name!r}; pass "
        f"normalization=(mean, std), a preprocessing in "
        f"{sorted(PREPROCESSING)}, or use one of {sorted(NORMALIZATION)}"
      )
    return False, NORMALIZATION[dataset_name]
  if name not in PREPROCESSING:
    raise ValueError(
      f"unknown preprocessing {name!r}; use '' (the dataset's own), "
      + ", ".join(repr(k) for k in PREPROCESSING)
    )
  entry = PREPROCESSING[name]
  return entry["channels"] == "bgr", entry["normalization"]


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, C] (or [N, H, W, C]) -> [size, size, C] (or batched).

  Smaller images are zero-padded, centred (Fashion-MNIST 28 -> 32 keeps the
  CIFAR geometry through five 2x2 pools); larger ones are resized (shorter
  side to size / 0.875, the usual ImageNet eval ratio) and centre-cropped.
  """
  h, w = image.shape[-3:-1]
  if h <= size and w <= size:
    top, left = (size - h) // 2, (size - w) // 2
    pad = [(0, 0)] * (image.ndim - 3)
    pad += [(top, size - h - top), (left, size - w - left), (0, 0)]
    return np.pad(image, pad)
  if image.ndim != 3:
    return np.stack([fit_image(x, size) for x in image])
  from PIL import Image  # Only large images need resizing.

  scale = size / 0.875 / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  squeeze = image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
  if squeeze:
    resized = resized[..., None]
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top : top + size, left : left + size]


def augment(
  images: np.ndarray, rng: np.random.Generator, crop_pad: int = 4
) -> np.ndarray:
  """Random pad-and-crop and left-right flip of a batch, vectorised.

  images: [B, S, S, C] -> [B, S, S, C]; each image is zero-padded by
  `crop_pad`, cropped back at a uniform random offset, and flipped with
  probability 1/2.
  """
  b, s = images.shape[0], images.shape[1]
  if crop_pad:
    p = crop_pad
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    i, j = rng.integers(0, 2 * p + 1, size=(2, b))
    rows = i[:, None] + np.arange(s)  # [B, S]
    cols = j[:, None] + np.arange(s)
    images = padded[
      np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]
    ]
  flip = rng.random(b) < 0.5
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


@dataclasses.dataclass(frozen=True)
class _Fit(grain.transforms.Map):
  image_size: int

  def map(self, element):
    image = np.asarray(element["image"])
    if image.ndim == 2:
      image = image[..., None]
    return {
      "image": fit_image(image, self.image_size),
      "label": np.int32(element["label"]),
    }


@dataclasses.dataclass(frozen=True)
class _Masked(grain.transforms.Map):
  """Index -> record with mask 1, or record 0 with mask 0 past the end."""

  records: Any

  def map(self, i: int):
    real = i < len(self.records)
    record = self.records[i if real else 0]
    return {**record, "mask": np.float32(real)}


@dataclasses.dataclass(frozen=True)
class _Finish:
  """Batch of uint8 images -> augmented (if train), normalised float32."""

  mean: tuple[float, ...]
  std: tuple[float, ...]
  train: bool
  batch_size: int
  bgr: bool = False
  crop_pad: int = 4

  def __call__(self, batch, rng: np.random.Generator):
    images = batch["image"]
    if self.train:
      images = augment(images, rng, self.crop_pad)
    if self.bgr:  # RGB records -> BGR (Caffe / Keras models).
      images = images[..., ::-1]
    images = (images.astype(np.float32) / 255.0 - np.float32(self.mean)) / (
      np.float32(self.std)
    )
    out = {"image": images, "label": batch["label"].astype(np.int32)}
    if not self.train:  # Pad the last batch so eval sees one shape.
      out["mask"] = batch["mask"]
      pad = self.batch_size - len(out["label"])
      out = {
        k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
        for k, v in out.items()
      }
    return out


def pipeline(
  data_source: Any,
  *,
  batch_size: int,
  image_size: int,
  train: bool,
  seed: int = 0,
  num_epochs: int | None = 1,
  dataset_name: str = "fashion_mnist",
  normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
  preprocessing: str = "",
  shard_index: int | None = None,
  shard_count: int | None = None,
  in_memory: bool | None = None,
  cache_path: str | None = None,
  prefetch_threads: int = 1,
  crop_pad: int = 4,
) -> grain.IterDataset:
  """Batches of a data source, shuffled and augmented when `train`.

  Train batches are shuffled with `seed` (a new permutation every epoch),
  augmented (pad-and-crop by `crop_pad`, horizontal flip) and full (a
  short last batch is dropped). Eval batches come in record order,
  unaugmented, and the last one is padded to `batch_size` with a `mask`
  field (1 for real examples, 0 for padding) so that a jitted eval step
  sees one shape. The same seed gives the same batches.

  Multi-host: each process reads its own shard of the records
  (`shard_index`/`shard_count`, default `jax.process_index()` and
  `jax.process_count()`), so `batch_size` is the per-process batch. All
  shards yield the same number of batches (see the code for how).

  Small datasets (decoded size under 2 GiB, e.g. Fashion-MNIST, CIFAR-10)
  are decoded once into memory (`load_arrays`), since decoding PNG records one
  at a time costs more than a small model's training step; larger ones
  (ImageNet) are read and decoded record by record.

  Args:
    data_source: from `source(...)`, or any random-access source whose
      records are dicts with "image" (uint8 [H, W] or [H, W, C]) and "label".
    batch_size: examples per batch (per process).
    image_size: output height and width (see `fit_image`).
    train: shuffle, augment and drop the remainder.
    seed: shuffling and augmentation seed.
    num_epochs: passes over the data; None repeats forever.
    dataset_name: picks the normalisation from `NORMALIZATION`.
    normalization: (mean, std) per channel in [0, 1] units; overrides the name.
    preprocessing: "" (the dataset's normalisation, RGB) or a name in
      `PREPROCESSING` ("torchvision", "caffe"): what a converted model
      expects; `normalization` still overrides its mean and std.
    shard_index, shard_count: this process's shard; default from JAX.
    in_memory: decode everything first; default by size, as above.
    cache_path: .npz file caching the decoded arrays (in-memory mode).
    prefetch_threads: threads preparing batches ahead of the consumer.
    crop_pad: train augmentation: zero padding before the random crop
      back to `image_size`, in pixels (0 = flips only).

  Returns:
    A `grain.IterDataset` of dicts of NumPy arrays: image f32[B, S, S, C],
    label i32[B] (and mask f32[B] when not `train`). Its iterators support
    `get_state()`/`set_state()` for resumable training.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if shard_index is None or shard_count is None:
    import jax

    shard_index, shard_count = jax.process_index(), jax.process_count()
  if normalization is None:
    bgr, normalization = preprocessing_of(preprocessing, dataset_name)
  else:
    bgr, _ = (
      preprocessing_of(preprocessing, "") if preprocessing else (False, None)
    )
  mean, std = normalization
  if in_memory is None:
    in_memory = is_small(data_source)
  if in_memory:
    images, labels = load_arrays(data_source, cache_path)
    ds = grain.MapDataset.source(
      ArraySource(fit_image(images, image_size), labels)
    )
  else:
    ds = grain.MapDataset.source(data_source).map(_Fit(image_size))
  # Every process must see the same number of batches, or a multi-host jit
  # waits forever: train shards drop the few records past a multiple of
  # shard_count; eval shards are padded to equal length with masked records.
  n = len(ds)
  if train:
    ds = ds[shard_index : n - n % shard_count : shard_count].shuffle(seed=seed)
  else:
    per_shard = -(-n // shard_count)
    ds = grain.MapDataset.range(
      shard_index, per_shard * shard_count, shard_count
    ).map(_Masked(ds))
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.batch(batch_size, drop_remainder=train)
  ds = ds.random_map(
    _Finish(tuple(mean), tuple(std), train, batch_size, bgr, crop_pad),
    seed=seed,
  )
  return ds.to_iter_dataset(
    grain.ReadOptions(num_threads=prefetch_threads, prefetch_buffer_size=4)
  )


def dataset(
  name: str,
  split: str,
  *,
  data_dir: str | None = None,
  auto_prepare: bool = True,
  **pipeline_kwargs: Any,
) -> grain.IterDataset:
  """`pipeline(source(name, split, data_dir), ...)` with a decode cache.

  The decoded arrays of small datasets are cached beside the prepared files
  (`<data_dir>/<name>/<version>/thinet_cache/<split>.npz`).
  """
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  src = source(name, split, data_dir, auto_prepare)
  pipeline_kwargs.setdefault("cache_path", _cache_path(name, split, data_dir))
  pipeline_kwargs.setdefault("dataset_name", name)
  return pipeline(src, **pipeline_kwargs)
