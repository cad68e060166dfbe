"""Profile: FLOPs against XLA's cost analysis, paper numbers, shapes."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from benchmarks import presets_table
from thinet_jax import models, presets, profile
from thinet_jax.spec import ModelSpec

from conftest import random_variables


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, list):  # Older JAX returned one dict per device.
    cost = cost[0]
  return float(cost["flops"])


def _in_bounds_taps(size: int, kernel: int, stride: int) -> int:
  """Kernel taps that land inside the image, summed over output positions."""
  pad = kernel // 2
  out = (size + 2 * pad - kernel) // stride + 1
  return sum(
    1
    for i in range(out)
    for u in range(kernel)
    if 0 <= i * stride + u - pad < size
  )


def _xla_visible_flops(row) -> int:
  """A row's FLOPs without the multiply-adds on zero padding.

  XLA's CPU cost analysis does not count the taps of a padded convolution
  that fall on padding; our count (like the paper's) does. Removing them
  gives the number XLA reports, exactly.
  """
  if row["kind"] != "conv":
    return row["flops"]
  kh, kw, cin, cout = row["kernel"]
  h, w, _ = row["input"]
  taps = _in_bounds_taps(h, kh, row["stride"]) * _in_bounds_taps(
    w, kw, row["stride"]
  )
  return 2 * taps * cin * cout


SPECS = [
  (presets.get("vgg16-fmnist"), 32),
  (presets.get("resnet-fmnist"), 32),
  (presets.resnet_thinet(0.5, stage_sizes=(1, 1), inner=(8, 16), out=(16, 32),
                         stem="imagenet", stem_width=8, num_classes=5), 40),
  (presets.resnet_thinet(1.0, stage_sizes=(1, 1), inner=(8, 16), out=(16, 32),
                         stem="small", stride_placement="torchvision",
                         stem_width=8, num_classes=5), 16),
  (ModelSpec(family="vgg", layers=(8, "M", 16, "M"), head="fc",
             fc_widths=(32,), num_classes=10), 16),
  (ModelSpec(family="vgg", layers=(8, "M", 16), head="gap", num_classes=10,
             batch_norm=True), 16),
]  # fmt: skip


@pytest.mark.parametrize("spec, size", SPECS)
def test_each_layer_flops_equal_xla_exactly(spec, size):
  for row in profile.layers(spec, size):
    if row["kind"] == "conv":
      kh, kw, cin, cout = row["kernel"]
      h, w, _ = row["input"]
      s, p = row["stride"], kh // 2
      x = jnp.ones((1, h, w, cin))
      k = jnp.ones((kh, kw, cin, cout))
      out = jax.eval_shape(
        lambda x, k, s=s, p=p: lax.conv_general_dilated(
          x, k, (s, s), ((p, p), (p, p)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
        ), x, k,
      )  # fmt: skip
      assert out.shape[1:] == tuple(row["output"]), row["name"]
      flops = _xla_flops(
        lambda x, k, s=s, p=p: lax.conv_general_dilated(
          x, k, (s, s), ((p, p), (p, p)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
        ), x, k,
      )  # fmt: skip
      assert flops == _xla_visible_flops(row), row["name"]
      if kh == 1:  # No padding, so no difference at all.
        assert flops == row["flops"]
    elif row["kind"] == "dense":
      n_in, n_out = row["kernel"]
      flops = _xla_flops(
        jnp.matmul, jnp.ones((1, n_in)), jnp.ones((n_in, n_out))
      )
      assert flops == row["flops"], row["name"]


@pytest.mark.parametrize("spec, size", SPECS)
def test_whole_model_flops_against_xla(spec, size):
  variables = random_variables(spec, size)
  x = jnp.ones((1, size, size, spec.in_channels))
  xla = _xla_flops(models.build(spec).apply, variables, x)
  rows = profile.layers(spec, size)
  visible = sum(_xla_visible_flops(r) for r in rows)
  # XLA also counts what we leave out on purpose: bias adds, BatchNorm,
  # ReLU, pooling, residual adds, the softmax-free head's mean. Those are
  # O(1) per activation, against O(k*k*C) per output for a conv, so they add
  # 1-11% on these narrow test nets (measured: 1.0% on vgg16-fmnist, 3.4% on
  # resnet-fmnist, 10% on a 16-channel ResNet); never less than zero.
  assert visible <= xla <= 1.12 * visible
  # And the padding we count but XLA skips explains the rest.
  assert profile.count(spec, size)["flops"] >= visible


def test_presets_match_the_paper():
  """Paper (ICCV 2017, Tables 3-5), params in millions, GFLOPs at 224x224.

  The paper's VGG parameter counts leave out biases: our counts minus the
  biases round to its numbers; ResNet has no biases but the classifier's.
  """
  for name, (paper_params, paper_gflops) in presets_table.PAPER.items():
    p = profile.count(presets.get(name), 224)
    assert round(p["flops"] / 1e9, 2) == pytest.approx(paper_gflops, abs=0.011)
    spec = presets.get(name)
    biases = sum(
      r["kernel"][-1]
      for r in p["layers"]
      if r["kind"] == "dense" or (r["kind"] == "conv" and not spec.batch_norm)
    )
    assert round((p["params"] - biases) / 1e6, 2) == pytest.approx(
      paper_params, abs=0.011
    ), name


def test_vgg16_exact_counts():
  # torchvision's vgg16 has 138,357,544 parameters; 15.47 GMACs.
  p = profile.count(presets.get("vgg16"), 224)
  assert p["params"] == 138_357_544
  assert p["macs"] == 15_470_264_320


def test_too_small_input_is_a_clear_error():
  with pytest.raises(ValueError, match="pool5.*too small"):
    profile.count(presets.get("vgg16"), 16)
  with pytest.raises(ValueError, match="image_size"):
    profile.count(presets.get("vgg16"), 0)


def test_table_lists_every_weight_layer_and_totals():
  p = profile.count(presets.get("resnet-fmnist"), 32)
  table = profile.format_table(p)
  for row in p["layers"]:
    if row["kind"] != "batch_norm":
      assert row["name"] in table
  assert f"{p['params']:,}" in table.splitlines()[-1]


def test_presets_page_table_is_generated():
  readme = (presets_table.ROOT / "docs" / "presets.md").read_text()
  assert (
    presets_table.replace_block(
      readme, presets_table.markdown(presets_table.rows())
    )
    == readme
  ), "run: python benchmarks/presets_table.py --write"
