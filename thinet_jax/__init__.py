"""thinet_jax: ThiNet filter pruning (Luo, Wu, Lin, ICCV 2017) in JAX/Flax.

Modules (import what you need; nothing heavy is imported here):
  spec      ModelSpec, the widths of a VGG or ResNet as data
  presets   the paper's architectures and CPU-sized variants
  models    Flax Linen models built from a spec; consumer-input capture
  profile   params and FLOPs per layer
  data      TFDS data sources read with grain, no TensorFlow
  describe  profile + capture + throughput of a model over real data
"""

__version__ = "0.1.0"
