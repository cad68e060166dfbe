#!/usr/bin/env bash
# Installs everything thinet_jax needs on a fresh Debian machine: the
# Fashion-MNIST Debian package (as root), a virtual environment at .venv with
# the package and its dev tools, and the dataset prepared for TFDS.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -c 'from thinet_jax import data; print("Fashion-MNIST ready in", data.prepare_fashion_mnist())'
