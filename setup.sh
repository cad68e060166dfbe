#!/usr/bin/env bash
# Installs thinet_jax on a fresh Debian machine: the Fashion-MNIST Debian
# package (as root, or through sudo), a virtual environment at .venv with the
# package, and the dataset prepared for TFDS.
#
#   ./setup.sh         the library and its commands (what the main job needs)
#   ./setup.sh --dev   plus the test and benchmark tools (PyTorch, ONNX
#                      Runtime, pytest, ruff): what the test suite needs
set -euo pipefail
cd "$(dirname "$0")"
extras=""
case "${1:-}" in
  "") ;;
  --dev) extras="[dev]" ;;
  *) echo "usage: ./setup.sh [--dev]" >&2; exit 2 ;;
esac
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
.venv/bin/python -c 'from thinet_jax import data; print("Fashion-MNIST ready in", data.prepare_fashion_mnist())'
