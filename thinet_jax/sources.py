"""Datasets on disk: TFDS array_record data sources, no TensorFlow.

Datasets are prepared into array_record files and read through
`tfds.data_source`, whose records decode to NumPy (`source`); small splits
decode once into arrays cached beside the prepared files (`arrays`,
`load_arrays`), labels are read without decoding images (`labels`).

Fashion-MNIST is prepared offline from the Debian package
`dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/*.gz`). Debian
rewrote the gzip headers of those files, so their checksums differ from the
ones TFDS records for the upstream download (the pixels are identical); the
builder below therefore reads the local files instead of downloading. It keeps
the stock builder's name, version and features, so the prepared files are
exactly what `tfds.data_source("fashion_mnist")` expects, and every other
prepared TFDS dataset (`cifar10`, `imagenet2012` with its manual download) goes
through the same `source` by name. `thinet_jax.data` re-exports every name.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from thinet_jax import progress

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FMNIST_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not prepared in the data dir; the message says how to fix."""


def default_data_dir() -> str:
  """`$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (TFDS's own default)."""
  return os.path.expanduser(
    os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  )


def read_idx_gz(path: str) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzip-compressed, into an array.

  The header gives the element type (only unsigned bytes occur in MNIST-like
  data) and the dimensions; a truncated or corrupted file raises ValueError.
  """
  with gzip.open(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file")
  ndim = raw[3]
  dims = tuple(
    int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
  )
  offset = 4 + 4 * ndim
  expected = int(np.prod(dims))
  if len(raw) - offset != expected:
    raise ValueError(
      f"{path}: header promises {expected} bytes of data for shape {dims}, "
      f"file has {len(raw) - offset}"
    )
  return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


class FashionMNIST(tfds_mnist.FashionMNIST, skip_registration=True):
  """The stock TFDS `fashion_mnist` builder, fed from local IDX .gz files.

  Same name, version, features and split names as the registered builder, so
  its output is read back by `tfds.data_source("fashion_mnist")` unchanged.
  """

  def __init__(self, *, source_dir: str = DEBIAN_FASHION_MNIST_DIR, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local; nothing is downloaded.
    return {
      split: self._generate_examples(
        *(os.path.join(self._source_dir, f) for f in files)
      )
      for split, files in _FMNIST_FILES.items()
    }

  def _generate_examples(self, images_path: str, labels_path: str):
    images = read_idx_gz(images_path)[..., None]
    labels = read_idx_gz(labels_path).astype(np.int64)
    if len(images) != len(labels):
      raise ValueError(
        f"{images_path} has {len(images)} images but {labels_path} has "
        f"{len(labels)} labels"
      )
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
      # PNG bytes encoded here: TFDS would encode a NumPy image with
      # TensorFlow, which we do not install.
      yield index, {"image": _png(image), "label": label}


def _png(image: np.ndarray) -> bytes:
  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(image[..., 0]).save(buffer, format="png")
  return buffer.getvalue()


def prepare_fashion_mnist(
  data_dir: str | None = None, source_dir: str = DEBIAN_FASHION_MNIST_DIR
) -> str:
  """Prepares Fashion-MNIST as array_record files under `data_dir`.

  Idempotent: a dataset already prepared there is left alone.

  Returns:
    The data dir used.
  """
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  missing = [
    f
    for files in _FMNIST_FILES.values()
    for f in files
    if not os.path.exists(os.path.join(source_dir, f))
  ]
  if missing:
    raise DatasetNotFoundError(
      f"Fashion-MNIST source files {missing} are not in {source_dir}. "
      "Install them with `apt-get update && apt-get install -y "
      "dataset-fashion-mnist`, or pass source_dir= a folder holding the four "
      "IDX .gz files."
    )
  builder = FashionMNIST(source_dir=source_dir, data_dir=data_dir)
  builder.download_and_prepare(
    file_format="array_record",
    download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    ),
  )
  return data_dir


# Datasets that `source` can prepare by itself when they are missing.
_LOCAL_PREPARERS = {"fashion_mnist": prepare_fashion_mnist}


def source(
  name: str,
  split: str,
  data_dir: str | None = None,
  auto_prepare: bool = True,
) -> Any:
  """A random-access TFDS data source of a prepared dataset.

  Args:
    name: TFDS name, e.g. "fashion_mnist", "cifar10", "imagenet2012".
    split: TFDS split, e.g. "train", "test", "validation", "train[:10%]".
    data_dir: where prepared datasets live; default `default_data_dir()`.
    auto_prepare: prepare datasets that can be built offline (Fashion-MNIST
      from its Debian package) when they are missing.

  Returns:
    A `tfds` array_record data source: `len()` and `[i]` -> dict of NumPy.

  Raises:
    DatasetNotFoundError: the dataset is not prepared; the message says how.
  """
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DatasetNotFoundError(
      f"data_dir {data_dir!r} is a file, not a folder; point it at the "
      "folder that holds (or will hold) the prepared datasets"
    )
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotFoundError(
      f"{name!r} is not a TFDS dataset name ({e}). Examples: fashion_mnist, "
      "cifar10, imagenet2012."
    ) from None
  if not builder.is_prepared():
    if auto_prepare and name in _LOCAL_PREPARERS:
      _LOCAL_PREPARERS[name](data_dir)
    else:
      raise DatasetNotFoundError(
        f"Dataset {name!r} is not prepared in {data_dir}. "
        + _how_to_prepare(name, data_dir)
      )
  return tfds.data_source(name, split=split, data_dir=data_dir)


def _how_to_prepare(name: str, data_dir: str) -> str:
  if name == "fashion_mnist":
    return (
      "Run `python -c 'from thinet_jax import data; "
      f'data.prepare_fashion_mnist("{data_dir}")\'` after '
      "`apt-get install -y dataset-fashion-mnist`."
    )
  if name == "imagenet2012":
    return (
      "ImageNet needs a manual download: put ILSVRC2012_img_train.tar and "
      "ILSVRC2012_img_val.tar in <data_dir>/downloads/manual and run "
      f"`tfds build imagenet2012 --data_dir {data_dir} "
      "--file_format array_record` on a machine with TensorFlow."
    )
  return (
    f"Build it with `tfds build {name} --data_dir {data_dir} "
    "--file_format array_record` (array_record is required: data sources "
    "cannot read tfrecord files)."
  )


class ArraySource:
  """A random-access source over in-memory arrays (grain's protocol)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {"image": self.images[i], "label": self.labels[i]}


def load_arrays(
  data_source: Any, cache_path: str | None = None, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a whole (small) data source into uint8 images and int32 labels.

  Decoding a record costs ~0.2 ms (PNG via PIL), so Fashion-MNIST's 60,000
  take ~12 s; with `cache_path` the arrays are saved there as .npz and later
  calls load them in well under a second.

  Returns:
    images: uint8 [N, H, W, C]; labels: int32 [N].
  """
  if isinstance(data_source, ArraySource):
    return data_source.images, data_source.labels
  if cache_path and os.path.exists(cache_path):
    with np.load(cache_path) as f:
      return f["image"], f["label"]
  images, labels = [], []
  n = len(data_source)
  read_many = getattr(
    data_source, "__getitems__", lambda ids: [data_source[i] for i in ids]
  )
  with progress.bar(total=n, desc="decoding", unit="img") as bar:
    for start in range(0, n, chunk):
      records = read_many(range(start, min(n, start + chunk)))
      images.extend(np.asarray(r["image"]) for r in records)
      labels.extend(int(r["label"]) for r in records)
      bar.update(len(records))
  image_arr = np.stack(images)
  if image_arr.ndim == 3:
    image_arr = image_arr[..., None]
  label_arr = np.asarray(labels, np.int32)
  if cache_path:
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    tmp = cache_path + f".tmp{os.getpid()}.npz"
    np.savez(tmp, image=image_arr, label=label_arr)
    os.replace(tmp, cache_path)  # Atomic: concurrent readers never see half.
  return image_arr, label_arr


def _cache_path(name: str, split: str, data_dir: str) -> str:
  builder = tfds.builder(name, data_dir=data_dir)
  safe_split = re.sub(r"[^A-Za-z0-9_.%-]", "_", split)
  return os.path.join(builder.data_dir, "thinet_cache", f"{safe_split}.npz")


def arrays(
  name: str, split: str, data_dir: str | None = None, auto_prepare: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  """A small split decoded to (uint8 images [N, H, W, C], int32 labels [N]).

  Cached beside the prepared files, like `dataset`'s decoded arrays.
  """
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  src = source(name, split, data_dir, auto_prepare)
  return load_arrays(src, _cache_path(name, split, data_dir))


def class_balanced(
  labels: np.ndarray, per_class: int, seed: int = 0
) -> np.ndarray:
  """Sorted indices of `per_class` random examples of every class.

  The paper's statistics sample (section 4.1: 10 images per class of the
  training set). Raises if a class has fewer examples.
  """
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise ValueError(
        f"class {c} has {len(members)} examples, fewer than {per_class}"
      )
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def labels(
  name: str, split: str, data_dir: str | None = None, chunk: int = 4096
) -> np.ndarray:
  """int32 labels of a split, read without decoding a single image.

  What a class-balanced sample of a large dataset needs (ImageNet's 1.28M
  labels: minutes, against hours of JPEG decoding); cached beside the
  prepared files as `<split>_labels.npy`.
  """
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  path = _cache_path(name, split, data_dir).removesuffix(".npz")
  path += "_labels.npy"
  if os.path.exists(path):
    return np.load(path)
  n = len(source(name, split, data_dir))  # Prepared, or a clear error.
  raw = tfds.data_source(
    name, split=split, data_dir=data_dir,
    decoders={"image": tfds.decode.SkipDecoding()},
  )  # fmt: skip
  out = np.empty(n, np.int32)
  with progress.bar(total=n, desc=f"labels of {name}", unit="rec") as bar:
    for start in range(0, n, chunk):
      ids = range(start, min(n, start + chunk))
      out[start : ids.stop] = [int(r["label"]) for r in raw.__getitems__(ids)]
      bar.update(len(ids))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npy"
  np.save(tmp, out)
  os.replace(tmp, path)
  return out


class Subset:
  """Records `indices` of a random-access source, as a source."""

  def __init__(self, data_source: Any, indices: np.ndarray):
    self.source, self.indices = data_source, np.asarray(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return self.source[int(self.indices[i])]


def is_small(data_source: Any) -> bool:
  """Whether decoding the whole source fits in 2 GiB (judged by its first
  record), the size `pipeline` keeps in memory."""
  first = np.asarray(data_source[0]["image"])
  return first.nbytes * len(data_source) < 2**31


def num_classes(name: str, data_dir: str | None = None) -> int:
  """Number of label classes of a prepared TFDS dataset."""
  builder = tfds.builder(
    name, data_dir=os.path.expanduser(data_dir or default_data_dir())
  )
  return builder.info.features["label"].num_classes
