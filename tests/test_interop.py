"""Pretrained-weight import: PyTorch (torchvision naming) and Keras files.

PyTorch models with torchvision's module layout (written here, since
torchvision itself is not a dependency) are given random weights and random
BatchNorm statistics, saved as .safetensors and .pth, converted, and must
give PyTorch's logits. Keras-named .h5 files are written with h5py and
checked against a plain-NumPy forward that reads the Keras names directly.
"""

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from thinet_jax import interop, models, presets, profile
from thinet_jax.spec import ModelSpec

import reference
from torch_models import TorchResNet, TorchVGG, fmnist, full_size

torch.manual_seed(0)


def _randomise_batch_norm(model):
  """Fresh BatchNorm is nearly the identity; make it matter."""
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.2)
        m.running_mean.normal_(0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
      if isinstance(m, nn.Conv2d) and m.bias is not None:
        m.bias.normal_(0, 0.2)
  return model.eval()


VGG_SPEC = dict(layers=(4, "M", 6, 6, "M"), fc_widths=(7, 5), num_classes=3,
                in_channels=3, dropout=0.5)  # fmt: skip
VGG_SIZE = 8  # two pools: a 2x2 map, so the NCHW flatten order matters


def _torch_vgg(batch_norm):
  model = TorchVGG([4, "M", 6, 6, "M"], batch_norm, (7, 5), 3, 3, side=2)
  return _randomise_batch_norm(model)


def _resnet_spec(placement):
  return presets.resnet_thinet(
    1.0, stage_sizes=(2, 1), inner=(3, 5), out=(8, 12), stem="imagenet",
    stem_width=4, stride_placement=placement, num_classes=3, in_channels=3,
  )  # fmt: skip


def _torch_logits(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


def _our_logits(spec, variables, x):
  return np.asarray(models.build(spec).apply(variables, x))


def _close(ours, theirs):
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


def _images(size, n=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_torchvision_vgg_matches_pytorch(tmp_path, batch_norm, fmt):
  model = _torch_vgg(batch_norm)
  path = tmp_path / f"vgg.{fmt}"
  if fmt == "safetensors":
    save_file(model.state_dict(), str(path))
  else:
    torch.save(model.state_dict(), str(path))
  spec = ModelSpec(family="vgg", batch_norm=batch_norm, **VGG_SPEC)
  got_spec, variables = interop.from_torchvision(str(path), spec, VGG_SIZE)
  assert got_spec == spec
  x = _images(VGG_SIZE)
  _close(_our_logits(spec, variables, x), _torch_logits(model, x))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_torchvision_resnet_matches_pytorch(tmp_path, fmt):
  model = _randomise_batch_norm(TorchResNet((2, 1), (3, 5), (8, 12), 4, 3, 3))
  path = tmp_path / f"resnet.{fmt}"
  if fmt == "safetensors":
    save_file(model.state_dict(), str(path))
  else:
    torch.save(model.state_dict(), str(path))
  spec = _resnet_spec("torchvision")
  _, variables = interop.from_torchvision(str(path), spec)
  x = _images(32)
  _close(_our_logits(spec, variables, x), _torch_logits(model, x))
  # The stride placement is part of the architecture: Caffe's placement
  # on the same weights computes something else.
  other = _our_logits(_resnet_spec("caffe"), variables, x)
  assert np.abs(other - _torch_logits(model, x)).max() > 1e-3


@pytest.mark.parametrize("name", ["vgg16-fmnist", "resnet-fmnist"])
def test_the_fmnist_twins_import_into_their_presets(name):
  # benchmarks/peer.py trains these in PyTorch and prunes them on both
  # sides: the import must be the same function, small stem included.
  torch.manual_seed(0)
  model = _randomise_batch_norm(fmnist(name))
  spec = presets.get(name)
  _, variables = interop.from_torchvision(model.state_dict(), spec, 32)
  x = np.random.default_rng(1).normal(size=(4, 32, 32, 1)).astype(np.float32)
  _close(_our_logits(spec, variables, x), _torch_logits(model, x))


def test_a_state_dict_of_another_architecture_names_the_tensor(tmp_path):
  state = {k: v.numpy() for k, v in _torch_vgg(False).state_dict().items()}
  spec = ModelSpec(family="vgg", batch_norm=False, **VGG_SPEC)
  wrong = dict(state)
  wrong["features.3.weight"] = np.zeros((7, 4, 3, 3), np.float32)
  with pytest.raises(interop.InteropError) as e:
    interop.from_torchvision(wrong, spec, VGG_SIZE)
  assert "'features.3.weight'" in str(e.value)
  assert "(7, 4, 3, 3)" in str(e.value) and "(6, 4, 3, 3)" in str(e.value)
  missing = {k: v for k, v in state.items() if k != "classifier.3.bias"}
  with pytest.raises(interop.InteropError, match="'classifier.3.bias'"):
    interop.from_torchvision(missing, spec, VGG_SIZE)
  with pytest.raises(interop.InteropError, match="'features.3.weight'"):
    # A BatchNorm checkpoint read as the plain VGG: the second conv sits
    # at features.4 there, the plain layout expects features.3.
    bn = {k: v.numpy() for k, v in _torch_vgg(True).state_dict().items()}
    interop.from_torchvision(bn, spec, VGG_SIZE)
  with pytest.raises(interop.InteropError, match="image_size|shape"):
    interop.from_torchvision(state, spec, 16)  # classifier sees 4x4 maps
  with pytest.raises(ValueError, match="unknown torchvision architecture"):
    interop.from_torchvision(state, "vgg19")
  with pytest.raises(FileNotFoundError):
    interop.from_torchvision(str(tmp_path / "none.safetensors"), spec)
  with pytest.raises(ValueError, match="unknown weights format"):
    (tmp_path / "w.npz").write_bytes(b"")
    interop.from_torchvision(str(tmp_path / "w.npz"), spec)


def test_pth_is_loaded_without_running_its_code(tmp_path):
  """torch.load(weights_only=True): a pickle carrying code is refused."""

  class Evil:
    def __reduce__(self):
      return (print, ("this must never run",))

  path = tmp_path / "evil.pth"
  torch.save({"features.0.weight": Evil()}, str(path))
  with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
    interop.read_state_dict(str(path))


def _count(tensors):
  return sum(int(np.prod(t.shape)) for t in tensors)


@pytest.mark.parametrize(
  "arch,preset",
  [
    ("vgg16", "vgg16"),
    ("vgg16_bn", None),
    ("resnet50", "resnet50-torchvision"),
  ],
)
def test_full_size_torchvision_state_dicts_convert(arch, preset):
  """Random weights with torchvision's names and shapes (the modules above
  at full size): the conversion has exactly the preset's parameters, and
  PyTorch's less the conv biases folded into BatchNorm."""
  with torch.device("meta"):  # shapes only, for the count
    model = full_size(arch)
  params = {k: v for k, v in model.named_parameters()}
  torch_count = _count(params.values())
  rng = np.random.default_rng(0)
  state = {
    k: rng.standard_normal(v.shape, np.float32) * 0.01
    for k, v in model.state_dict().items()
    if not k.endswith("num_batches_tracked")
  }
  spec, variables = interop.from_torchvision(state, arch)
  if preset:  # VGG-16-BN has no preset: VGG-16's with BatchNorm.
    assert spec == presets.get(preset)
  assert spec.batch_norm == (arch != "vgg16")
  ours = sum(int(np.prod(np.shape(v))) for v in _leaves(variables["params"]))
  # A conv bias in front of BatchNorm folds into its running mean.
  folded = sum(
    m.bias.numel() for m in model.modules()
    if isinstance(m, torch.nn.Conv2d) and m.bias is not None
    and spec.batch_norm
  )  # fmt: skip
  assert ours == torch_count - folded == profile.count(spec, 224)["params"]
  assert (folded > 0) == (arch == "vgg16_bn")


def _leaves(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _leaves(v)
    else:
      yield v


# --- Keras ----------------------------------------------------------------


def _write_keras_h5(path, layers):
  """The Keras 2 weights layout: layer groups, `weight_names` attributes,
  datasets at "<layer>/<weight>:0" inside each group."""
  with h5py.File(path, "w") as f:
    f.attrs["layer_names"] = [n.encode() for n in layers]
    for layer, weights in layers.items():
      group = f.create_group(layer)
      names = [f"{layer}/{w}:0" for w in weights]
      group.attrs["weight_names"] = [n.encode() for n in names]
      for name, value in zip(names, weights.values(), strict=True):
        group.create_dataset(name, data=value)


def _keras_vgg_weights(rng, cfg, fc, classes, in_ch, side):
  layers, c, stage, i = {"input_1": {}}, in_ch, 1, 1
  for v in cfg:
    if v == "M":
      layers[f"block{stage}_pool"] = {}
      stage, i = stage + 1, 1
      continue
    layers[f"block{stage}_conv{i}"] = {
      "kernel": rng.normal(0, (2 / (9 * c)) ** 0.5, (3, 3, c, v)),
      "bias": rng.normal(0, 0.1, v),
    }
    c, i = v, i + 1
  fan_in = side * side * c
  for name, width in zip(("fc1", "fc2", "predictions"), (*fc, classes),
                         strict=True):  # fmt: skip
    layers[name] = {
      "kernel": rng.normal(0, (2 / fan_in) ** 0.5, (fan_in, width)),
      "bias": rng.normal(0, 0.1, width),
    }
    fan_in = width
  return {k: {n: w.astype(np.float32) for n, w in v.items()}
          for k, v in layers.items()}  # fmt: skip


def _keras_vgg_forward(layers, x):
  """NumPy, straight from the Keras names (channels_last throughout)."""
  x = x.astype(np.float64)
  for name, w in layers.items():
    if "_conv" in name:
      x = reference.relu(reference.conv(x, w["kernel"], 1, w["bias"]))
    elif name.endswith("_pool"):
      x = reference.max_pool(x, 2, 2)
  x = x.reshape(len(x), -1)  # Keras Flatten: (h, w, c)
  x = reference.relu(x @ layers["fc1"]["kernel"] + layers["fc1"]["bias"])
  x = reference.relu(x @ layers["fc2"]["kernel"] + layers["fc2"]["bias"])
  return x @ layers["predictions"]["kernel"] + layers["predictions"]["bias"]


def _keras_conv_bn(rng, layers, prefix, cin, cout, k):
  layers[f"{prefix}_conv"] = {
    "kernel": rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout)),
    "bias": rng.normal(0, 0.1, cout),
  }
  layers[f"{prefix}_bn"] = {
    "gamma": rng.uniform(0.5, 1.5, cout), "beta": rng.normal(0, 0.2, cout),
    "moving_mean": rng.normal(0, 0.2, cout),
    "moving_variance": rng.uniform(0.5, 2.0, cout),
  }  # fmt: skip


def _keras_resnet_weights(rng, sizes, inner, out, stem, classes, in_ch):
  layers = {}
  _keras_conv_bn(rng, layers, "conv1", in_ch, stem, 7)
  cin = stem
  for s, (n, w, c) in enumerate(zip(sizes, inner, out, strict=True)):
    for b in range(n):
      p = f"conv{s + 2}_block{b + 1}"
      if b == 0:
        _keras_conv_bn(rng, layers, f"{p}_0", cin, c, 1)
      _keras_conv_bn(rng, layers, f"{p}_1", cin, w, 1)
      _keras_conv_bn(rng, layers, f"{p}_2", w, w, 3)
      _keras_conv_bn(rng, layers, f"{p}_3", w, c, 1)
      cin = c
  layers["predictions"] = {
    "kernel": rng.normal(0, (1 / cin) ** 0.5, (cin, classes)),
    "bias": rng.normal(0, 0.1, classes),
  }
  return {k: {n: w.astype(np.float32) for n, w in v.items()}
          for k, v in layers.items()}  # fmt: skip


def _keras_resnet_forward(layers, x, sizes):
  """NumPy from the Keras ResNet50 names: stride in the first 1x1 conv and
  the shortcut, BatchNorm epsilon 1.001e-5, conv biases."""

  def conv_bn(x, prefix, stride=1, act=True):
    c, bn = layers[f"{prefix}_conv"], layers[f"{prefix}_bn"]
    y = reference.conv(x, c["kernel"], stride, c["bias"])
    y = (y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1.001e-5)
    y = y * bn["gamma"] + bn["beta"]
    return reference.relu(y) if act else y

  x = conv_bn(x.astype(np.float64), "conv1", 2)
  x = reference.max_pool(x, 3, 2, pad=1)
  for s, n in enumerate(sizes):
    for b in range(n):
      p = f"conv{s + 2}_block{b + 1}"
      stride = 2 if (b == 0 and s > 0) else 1
      y = conv_bn(x, f"{p}_1", stride)
      y = conv_bn(y, f"{p}_2")
      y = conv_bn(y, f"{p}_3", act=False)
      shortcut = conv_bn(x, f"{p}_0", stride, act=False) if b == 0 else x
      x = reference.relu(y + shortcut)
  head = layers["predictions"]
  return x.mean(axis=(1, 2)) @ head["kernel"] + head["bias"]


def test_keras_vgg16_h5_matches_a_numpy_forward(tmp_path):
  rng = np.random.default_rng(1)
  layers = _keras_vgg_weights(rng, [4, "M", 6, 6, "M"], (7, 5), 3, 3, 2)
  path = str(tmp_path / "vgg.h5")
  _write_keras_h5(path, layers)
  spec = ModelSpec(family="vgg", batch_norm=False, **VGG_SPEC)
  _, variables = interop.from_keras(path, spec, VGG_SIZE)
  x = _images(VGG_SIZE)
  _close(_our_logits(spec, variables, x), _keras_vgg_forward(layers, x))


def test_keras_resnet50_h5_matches_a_numpy_forward(tmp_path):
  rng = np.random.default_rng(2)
  layers = _keras_resnet_weights(rng, (2, 1), (3, 5), (8, 12), 4, 3, 3)
  path = str(tmp_path / "resnet.h5")
  _write_keras_h5(path, layers)
  spec = _resnet_spec("caffe")
  _, variables = interop.from_keras(path, spec)
  x = _images(32)
  _close(_our_logits(spec, variables, x),
         _keras_resnet_forward(layers, x, (2, 1)))  # fmt: skip
  # A wrong tensor is named with both shapes.
  layers["conv2_block1_2_conv"]["kernel"] = np.zeros((3, 3, 3, 4), np.float32)
  _write_keras_h5(path, layers)
  with pytest.raises(interop.InteropError) as e:
    interop.from_keras(path, spec)
  assert "'conv2_block1_2_conv/kernel'" in str(e.value)
  assert "(3, 3, 3, 4)" in str(e.value) and "(3, 3, 3, 3)" in str(e.value)


def test_unreadable_weights_files_say_what_was_expected(tmp_path):
  """An empty .pth (an interrupted download), a directory named like a
  weights file, a truncated .safetensors: each names the path and what
  was expected, instead of EOFError or "No such device"."""
  (tmp_path / "empty.pth").write_bytes(b"")
  with pytest.raises(interop.InteropError, match="is empty"):
    interop.read_state_dict(str(tmp_path / "empty.pth"))
  (tmp_path / "x.safetensors").mkdir()
  with pytest.raises(interop.InteropError, match="is a directory; expected"):
    interop.read_state_dict(str(tmp_path / "x.safetensors"))
  (tmp_path / "cut.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00")
  with pytest.raises(interop.InteropError, match="not readable as a safet"):
    interop.read_state_dict(str(tmp_path / "cut.safetensors"))
  (tmp_path / "junk.pth").write_bytes(b"not a zip or a pickle")
  with pytest.raises(interop.InteropError, match="saved by torch.save"):
    interop.read_state_dict(str(tmp_path / "junk.pth"))
  (tmp_path / "w.h5").mkdir()
  with pytest.raises(interop.InteropError, match="is a directory"):
    interop.read_keras_h5(str(tmp_path / "w.h5"))
