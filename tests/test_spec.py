"""ModelSpec: JSON round-trip, immutability and every validation error."""

import dataclasses
import json

import pytest

from thinet_jax import presets
from thinet_jax.spec import ModelSpec, SpecError

VGG = dict(family="vgg", layers=(8, "M", 16), head="gap", num_classes=10)
RESNET = dict(
  family="resnet",
  stage_sizes=(1, 2),
  stage_widths=(32, 64),
  block_widths=((8, 8), (16, 16), (16, 12)),
  stem="small",
)


@pytest.mark.parametrize("name", presets.names())
def test_presets_round_trip_through_json(name):
  spec = presets.get(name)
  text = spec.to_json()
  assert ModelSpec.from_json(text) == spec
  assert hash(ModelSpec.from_json(text)) == hash(spec)
  # Only the family's own fields are written.
  other = "block_widths" if spec.family == "vgg" else "layers"
  assert other not in json.loads(text)


def test_round_trip_keeps_pool_markers_and_pairs():
  spec = ModelSpec(**RESNET)
  back = ModelSpec.from_dict(json.loads(spec.to_json()))
  assert back.block_widths == ((8, 8), (16, 16), (16, 12))
  vgg = ModelSpec.from_json(ModelSpec(**VGG).to_json())
  assert vgg.layers == (8, "M", 16)


def test_spec_is_immutable_and_replace_validates():
  spec = ModelSpec(**VGG)
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.num_classes = 3
  assert spec.replace(layers=(4, "M", 16)).layers == (4, "M", 16)
  with pytest.raises(SpecError, match=r"layers\[0\]"):
    spec.replace(layers=(0, "M", 16))


@pytest.mark.parametrize(
  "base, changes, field",
  [
    (VGG, dict(family="alexnet"), "family"),
    (VGG, dict(num_classes=0), "num_classes"),
    (VGG, dict(in_channels=-1), "in_channels"),
    (VGG, dict(batch_norm=1), "batch_norm"),
    (VGG, dict(layers=(8, "M", 0)), r"layers\[2\]"),
    (VGG, dict(layers=(8, -4)), r"layers\[1\]"),
    (VGG, dict(layers=(8, "P")), r"layers\[1\]"),
    (VGG, dict(layers=(True, 8)), r"layers\[0\]"),
    (VGG, dict(layers=(8.0,)), r"layers\[0\]"),
    (VGG, dict(layers=("M",)), "layers"),
    (VGG, dict(layers=()), "layers"),
    (VGG, dict(head="avg"), "head"),
    (VGG, dict(fc_widths=(32,)), "fc_widths"),  # gap head: no hidden fc
    (VGG, dict(head="fc", fc_widths=(32, 0)), r"fc_widths\[1\]"),
    (VGG, dict(head="fc", dropout=1.0), "dropout"),
    (VGG, dict(stage_sizes=(1,)), "stage_sizes"),  # resnet field on vgg
    (VGG, dict(stride_placement="torchvision"), "stride_placement"),
    (RESNET, dict(layers=(8,)), "layers"),  # vgg field on resnet
    (RESNET, dict(dropout=0.5), "dropout"),
    (RESNET, dict(stage_sizes=()), "stage_sizes"),
    (RESNET, dict(stage_sizes=(1, 0), block_widths=((8, 8),)), "stage_sizes"),
    (RESNET, dict(stage_widths=(32,)), "stage_widths"),
    (RESNET, dict(stage_widths=(32, -64)), r"stage_widths\[1\]"),
    (RESNET, dict(block_widths=((8, 8), (16, 16))), "block_widths"),
    (RESNET, dict(block_widths=((8, 8), (16, 16), (16,))), "block_widths"),
    (
      RESNET,
      dict(block_widths=((8, 8), (16, 0), (16, 16))),
      r"block_widths\[1\]\[1\]",
    ),
    (RESNET, dict(stride_placement="middle"), "stride_placement"),
    (RESNET, dict(stem="cifar"), "stem"),
    (RESNET, dict(stem_width=0), "stem_width"),
  ],
)
def test_invalid_specs_name_the_field(base, changes, field):
  with pytest.raises(SpecError, match=rf"^ModelSpec\.{field}"):
    ModelSpec(**{**base, **changes})


def test_from_dict_rejects_unknown_and_missing_fields():
  with pytest.raises(SpecError, match="ModelSpec.widths: unknown field"):
    ModelSpec.from_dict({"family": "vgg", "layers": [8], "widths": [8]})
  with pytest.raises(SpecError, match="ModelSpec.family: is required"):
    ModelSpec.from_dict({"layers": [8]})


def test_layer_names_follow_the_paper():
  vgg = presets.get("vgg16")
  assert vgg.vgg_conv_names()[:3] == ["conv1_1", "conv1_2", "conv2_1"]
  assert vgg.vgg_conv_names()[-1] == "conv5_3"
  assert len(vgg.vgg_conv_names()) == 13
  names = presets.get("resnet50").resnet_block_names()
  assert names[:4] == ["res2a", "res2b", "res2c", "res3a"]
  assert names[-1] == "res5c" and len(names) == 16
  deep = ModelSpec(
    family="resnet",
    stage_sizes=(1, 30),
    stage_widths=(8, 8),
    block_widths=((4, 4),) * 31,
  )
  names = deep.resnet_block_names()
  assert names[1:4] == ["res3a", "res3b1", "res3b2"] and names[-1] == "res3b29"
  assert len(set(names)) == 31


def test_skeleton_ignores_prunable_widths_only():
  vgg = presets.get("vgg16-fmnist")
  assert (
    presets.get("thinet-conv").skeleton() == presets.get("vgg16").skeleton()
  )
  assert vgg.replace(layers=(1,) + vgg.layers[1:]).skeleton() == vgg.skeleton()
  assert vgg.replace(num_classes=3).skeleton() != vgg.skeleton()
  assert (
    presets.get("thinet-30").skeleton() == presets.get("resnet50").skeleton()
  )
  assert (
    presets.get("resnet50-torchvision").skeleton()
    != presets.get("resnet50").skeleton()
  )


def test_unknown_preset_lists_the_known_ones():
  with pytest.raises(KeyError, match="thinet-conv"):
    presets.get("thinet-99")
