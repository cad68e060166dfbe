"""The model every benchmark's `--quick` mode runs (the tests run them).

A VGG of `vgg16-fmnist`'s kinds (BatchNorm, a flatten head, paper groups in
every stage but the last) with 5 instead of 13 convolutions: a quick mode
checks that a script still runs end to end, and compiling VGG-16's training
step took most of each quick run's minute on 2 cores. Imported by the
scripts as a sibling module (they run as `python benchmarks/<script>.py`).
"""

from thinet_jax.spec import ModelSpec

SPEC = ModelSpec(
  family="vgg", layers=(8, 8, "M", 16, 16, "M", 32, "M"), head="fc",
  fc_widths=(32,), batch_norm=True, num_classes=10, in_channels=1,
)  # fmt: skip
IMAGE_SIZE = 32
