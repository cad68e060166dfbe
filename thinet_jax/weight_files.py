"""Reading other frameworks' weight files into NumPy, without the frameworks
where possible: a PyTorch state dict (safetensors, or `torch.load` of a
.pt / .pth file when PyTorch is installed) and a Keras HDF5 weights file
(h5py). `thinet_jax.interop` converts what they return.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np


class InteropError(ValueError):
  """A weights file that does not match the expected architecture."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A PyTorch state dict as NumPy arrays: `.safetensors` without torch;
  `.pth` / `.pt` with `torch.load(weights_only=True)`."""
  endings = (".safetensors", ".pth", ".pt", ".bin")
  if not path.endswith(endings):
    raise ValueError(
      f"unknown weights format {path!r}: use .safetensors, .pth or .pt"
    )
  _check_weights_file(path, endings)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file

    try:
      return dict(load_file(path))
    except Exception as e:  # noqa: BLE001 (any read failure: a bad file)
      raise _unreadable(path, "a safetensors file", e) from None
  if path.endswith((".pth", ".pt", ".bin")):
    try:
      import torch
    except ImportError as e:
      raise ImportError(
        f"reading {path} needs PyTorch (pip install torch); or save the "
        "state dict as .safetensors, which needs no torch"
      ) from e
    # weights_only: tensors and plain containers only; a pickle that wants
    # to run code is refused instead of executed.
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
      found = re.search(r"Unsupported global: (\S+ \S+)", str(e))
      if found:  # A pickle that wants to run code: refused, never run.
        raise InteropError(
          f"{path!r} was refused: its pickle would call {found.group(1)} "
          "(only tensors are loaded, torch.load(weights_only=True)); save "
          "the state dict as .safetensors or from a trusted torch.save"
        ) from None
      raise _unreadable(path, "a state dict saved by torch.save", e) from None
    if not isinstance(state, Mapping):
      raise InteropError(
        f"{path} holds a {type(state).__name__}, not a state dict (a dict "
        "of tensors: torch.save(model.state_dict(), path))"
      )
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
      state = state["state_dict"]
    return {
      k: v.detach().cpu().numpy()
      for k, v in state.items()
      if hasattr(v, "numpy")
    }


def _check_weights_file(path: str, endings: tuple[str, ...]) -> None:
  """A weights path must be a non-empty file (not a directory)."""
  expected = f"a weights file ({', '.join(endings)})"
  if not os.path.exists(path):
    raise FileNotFoundError(f"no weights file at {path!r}; expected {expected}")
  if os.path.isdir(path):
    raise InteropError(f"{path!r} is a directory; expected {expected}")
  if os.path.getsize(path) == 0:
    raise InteropError(
      f"{path!r} is empty (0 bytes: an interrupted download or copy?); "
      f"expected {expected}"
    )


def _unreadable(path: str, what: str, error: Exception) -> InteropError:
  detail = " ".join(str(error).split())[:200]
  return InteropError(
    f"{path!r} is not readable as {what} ({type(error).__name__}: "
    f"{detail}); is the file complete and of that format?"
  )


def read_keras_h5(path: str) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {"kernel" | "bias" | "gamma" | ...: array}} from a Keras 2
  weights file (a full saved model's `model_weights` group, or a
  weights-only file)."""
  import h5py

  _check_weights_file(path, (".h5",))
  out: dict[str, dict[str, np.ndarray]] = {}
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise _unreadable(path, "a Keras .h5 weights file", e) from None
  with f:
    root = f["model_weights"] if "model_weights" in f else f
    names = [_str(n) for n in root.attrs.get("layer_names", list(root))]
    for layer in names:
      group = root[layer]
      weight_names = [_str(n) for n in group.attrs.get("weight_names", [])]
      for w in weight_names:
        # "block1_conv1/kernel:0" -> "kernel"
        out.setdefault(layer, {})[w.split("/")[-1].split(":")[0]] = np.asarray(
          group[w]
        )
  return out


def _str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)
