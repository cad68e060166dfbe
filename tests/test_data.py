"""Fashion-MNIST offline pipeline: counts, pixels, shapes, seeds, sharding."""

import collections
import gzip
import importlib.util
import os

import numpy as np
import pytest

from thinet_jax import data

FMNIST = data.DEBIAN_FASHION_MNIST_DIR


@pytest.fixture(scope="module")
def train_source():
  return data.source("fashion_mnist", "train")


@pytest.fixture(scope="module")
def test_source():
  return data.source("fashion_mnist", "test")


def test_prepared_without_tensorflow(train_source, test_source):
  assert importlib.util.find_spec("tensorflow") is None
  assert len(train_source) == 60_000
  assert len(test_source) == 10_000


def test_records_equal_the_debian_idx_files():
  # The raw IDX files, parsed here independently of data.read_idx_gz.
  def raw(name, header, shape):
    with gzip.open(os.path.join(FMNIST, name)) as f:
      buf = f.read()
    return np.frombuffer(buf[header:], np.uint8).reshape(shape)

  for split, prefix, n in (
    ("train", "train", 60_000),
    ("test", "t10k", 10_000),
  ):
    images = raw(f"{prefix}-images-idx3-ubyte.gz", 16, (n, 28, 28))
    labels = raw(f"{prefix}-labels-idx1-ubyte.gz", 8, (n,))
    got_images, got_labels = data.arrays("fashion_mnist", split)
    assert got_images.shape == (n, 28, 28, 1) and got_images.dtype == np.uint8
    # TFDS shuffles records when it writes them, so compare as multisets.
    want = collections.Counter(
      im.tobytes() + bytes([lab])
      for im, lab in zip(images, labels, strict=True)
    )
    got = collections.Counter(
      im.tobytes() + bytes([int(lab)])
      for im, lab in zip(got_images, got_labels, strict=True)
    )
    assert got == want


def test_train_has_6000_per_class():
  _, labels = data.arrays("fashion_mnist", "train")
  assert labels.shape == (60_000,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)


def _take(ds, n):
  out = []
  for batch in ds:
    out.append(batch)
    if len(out) == n:
      break
  return out


def test_train_batches_shapes_dtypes_and_seeds():
  def batches(seed):
    ds = data.dataset(
      "fashion_mnist", "train", batch_size=64, image_size=32, train=True,
      seed=seed, shard_index=0, shard_count=1,
    )  # fmt: skip
    return _take(ds, 3)

  a, b, c = batches(0), batches(0), batches(1)
  assert a[0]["image"].shape == (64, 32, 32, 1)
  assert a[0]["image"].dtype == np.float32
  assert a[0]["label"].shape == (64,) and a[0]["label"].dtype == np.int32
  assert "mask" not in a[0]
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert not np.array_equal(a[0]["label"], c[0]["label"])
  # Normalised: the background (0 pixels) maps to -mean/std.
  (mean,), (std,) = data.NORMALIZATION["fashion_mnist"]
  assert np.isclose(a[0]["image"].min(), -mean / std, atol=1e-5)


def test_eval_is_ordered_complete_and_padded(test_source):
  ds = data.dataset(
    "fashion_mnist", "test", batch_size=128, image_size=32, train=False,
    shard_index=0, shard_count=1,
  )  # fmt: skip
  batches = list(ds)
  assert len(batches) == 79  # ceil(10000 / 128)
  assert all(b["image"].shape == (128, 32, 32, 1) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert (
    mask.sum() == 10_000 and mask[:10_000].all() and not mask[10_000:].any()
  )
  labels = np.concatenate([b["label"] for b in batches])[:10_000]
  _, want = data.arrays("fashion_mnist", "test")
  np.testing.assert_array_equal(labels, want)
  # Unaugmented: image 0 is the raw image, padded by 2, normalised.
  (mean,), (std,) = data.NORMALIZATION["fashion_mnist"]
  raw = test_source[0]["image"].astype(np.float32) / 255.0
  want0 = (np.pad(raw, ((2, 2), (2, 2), (0, 0))) - mean) / std
  np.testing.assert_allclose(batches[0]["image"][0], want0, rtol=1e-6)
  # Same every time.
  again = next(iter(ds))
  np.testing.assert_array_equal(again["image"], batches[0]["image"])


def _synthetic(n=50, size=6):
  """n random images; label i identifies record i."""
  images = np.random.default_rng(0).integers(0, 255, (n, size, size, 1))
  return data.ArraySource(images.astype(np.uint8), np.arange(n))


@pytest.mark.parametrize("train", [True, False])
def test_process_shards_are_disjoint_and_cover(train):
  seen, n_batches = [], []
  for i in range(3):
    ds = data.pipeline(
      _synthetic(50), batch_size=4, image_size=6, train=train, shard_index=i,
      shard_count=3, normalization=((0.0,), (1.0,)), num_epochs=1,
    )  # fmt: skip
    ids = []
    for b in ds:
      keep = b.get("mask", np.ones(len(b["label"]))) > 0
      ids.extend(b["label"][keep].tolist())
    seen.append(ids)
    n_batches.append(len(list(ds)))
  # Equal step counts, or a multi-host jit would wait forever.
  assert n_batches == ([4, 4, 4] if train else [5, 5, 5])
  flat = [r for s in seen for r in s]
  assert len(flat) == len(set(flat)), "shards overlap"
  if train:  # 50 -> 48 for equal shards of 16: 4 full batches each.
    assert [len(s) for s in seen] == [16, 16, 16]
    assert set(flat) <= set(range(48))
  else:  # Eval keeps every record.
    assert sorted(flat) == list(range(50))


def test_augment_matches_a_per_image_loop():
  rng_images = np.random.default_rng(0)
  images = rng_images.integers(0, 255, (16, 8, 8, 2)).astype(np.uint8)
  got = data.augment(images, np.random.default_rng(7), crop_pad=3)
  # Replay the same draws in the same order, one image at a time.
  rng = np.random.default_rng(7)
  i, j = rng.integers(0, 7, size=(2, 16))
  flip = rng.random(16) < 0.5
  for b in range(16):
    padded = np.pad(images[b], ((3, 3), (3, 3), (0, 0)))
    want = padded[i[b] : i[b] + 8, j[b] : j[b] + 8]
    if flip[b]:
      want = want[:, ::-1]
    np.testing.assert_array_equal(got[b], want)


@pytest.mark.parametrize("crop_pad", [0, 2])
def test_the_pipeline_crops_by_crop_pad(crop_pad):
  """Each train image is its record shifted by at most crop_pad pixels and
  maybe flipped; crop_pad 0 leaves flips only."""
  source = _synthetic(40, size=6)
  ds = data.pipeline(
    source, batch_size=8, image_size=6, train=True, shard_index=0,
    shard_count=1, normalization=((0.0,), (1.0,)), num_epochs=1,
    crop_pad=crop_pad,
  )  # fmt: skip
  shifts = set()
  for batch in ds:
    for image, label in zip(batch["image"], batch["label"], strict=True):
      raw = source[int(label)]["image"].astype(np.float32) / 255.0
      p = crop_pad
      padded = np.pad(raw, ((p, p), (p, p), (0, 0)))
      found = [
        (i, j) for i in range(2 * p + 1) for j in range(2 * p + 1)
        for view in (image, image[:, ::-1])
        if np.allclose(padded[i : i + 6, j : j + 6], view)
      ]  # fmt: skip
      assert found, "an image is no crop of its record"
      shifts.update(found)
  assert len(shifts) > (1 if crop_pad else 0)


def test_fit_image_pads_and_crops():
  x = np.full((28, 28, 1), 7, np.uint8)
  y = data.fit_image(x, 32)
  assert y.shape == (32, 32, 1)
  assert (y[2:30, 2:30] == 7).all() and y.sum() == 7 * 28 * 28
  big = (
    np.random.default_rng(0).integers(0, 255, (300, 400, 3)).astype(np.uint8)
  )
  assert data.fit_image(big, 224).shape == (224, 224, 3)


def test_missing_dataset_errors_say_how_to_fix(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar10"):
    data.source("cifar10", "train", data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="manual"):
    data.source("imagenet2012", "train", data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="apt-get install"):
    data.prepare_fashion_mnist(str(tmp_path), source_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="not a TFDS dataset"):
    data.source("no_such_dataset_xyz", "train", data_dir=str(tmp_path))


def test_truncated_idx_file_is_rejected(tmp_path):
  path = tmp_path / "bad.gz"
  with gzip.open(path, "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 9)
  with pytest.raises(ValueError, match="promises 10 bytes"):
    data.read_idx_gz(str(path))


def test_unknown_normalisation_is_an_error():
  with pytest.raises(ValueError, match="normalization="):
    data.pipeline(
      _synthetic(), batch_size=2, image_size=6, train=False,
      dataset_name="svhn", shard_index=0, shard_count=1,
    )  # fmt: skip


def _rgb_source(n=3, size=4, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  return images, data.ArraySource(images, np.arange(n, dtype=np.int32))


def test_preprocessing_matches_each_sources_convention():
  """torchvision: RGB / 255, ImageNet mean and std; Caffe / Keras: BGR,
  [0, 255] minus the ImageNet mean (B, G, R) - written out here."""
  images, src = _rgb_source()
  x = images.astype(np.float64)
  expected = {
    "torchvision": (x / 255 - np.array([0.485, 0.456, 0.406]))
    / np.array([0.229, 0.224, 0.225]),
    "caffe": x[..., ::-1] - np.array([103.939, 116.779, 123.68]),
  }
  for name, want in expected.items():
    (batch,) = data.pipeline(
      src, batch_size=3, image_size=4, train=False, dataset_name="custom",
      preprocessing=name, shard_index=0, shard_count=1,
    )  # fmt: skip
    np.testing.assert_allclose(batch["image"], want, rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="unknown preprocessing 'keras'"):
    data.pipeline(
      src, batch_size=3, image_size=4, train=False, preprocessing="keras",
      shard_index=0, shard_count=1,
    )  # fmt: skip


def test_large_dataset_statistics_sample_reads_only_its_records(
  monkeypatch, tmp_path
):
  """The path ImageNet takes: labels read without decoding images, the
  class-balanced records read one by one. Same batches as the in-memory
  path on Fashion-MNIST's test split."""
  from configs import fmnist_vgg16_thinet
  from train import common

  config = fmnist_vgg16_thinet.get_config()
  config.train_split, config.images_per_class = "test", 3
  _, expected = data.arrays("fashion_mnist", "test")
  np.testing.assert_array_equal(data.labels("fashion_mnist", "test"), expected)
  in_memory = list(common.stats_batches(config)(seed=4))
  monkeypatch.setattr(data, "is_small", lambda source: False)
  by_record = list(common.stats_batches(config)(seed=4))
  assert sum(int(b["mask"].sum()) for b in by_record) == 30
  for a, b in zip(in_memory, by_record, strict=True):
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(a[key], b[key])


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "afile").write_text("")
  with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
    data.source("fashion_mnist", "train", str(tmp_path / "afile"))
