"""ThiNet-GAP on ImageNet (paper section 4.1, Table 3) from VGG-16.

ThiNet-Conv's recipe (configs/imagenet_vgg16_thinet_conv.py) after the fc
head is replaced: pool5 dropped, global average pooling over conv5_3's
14x14 map and one dense layer 512 -> 1000, fitted by least squares to the
old logits on the statistics images, then one epoch of fine-tuning.
The result has the `thinet-gap` preset's shape: 8.32M params, 9.34 GFLOPs.

  python -m train.convert --source torchvision --arch vgg16 \\
      --weights vgg16.safetensors --out /shared/models/vgg16
  # One machine, all its GPUs:
  python -m train.prune --config configs/imagenet_vgg16_thinet_gap.py \\
      --workdir /shared/runs/thinet-gap --config.data_dir=/shared/tfds
  # A TPU pod slice (4 hosts), on every worker:
  gcloud compute tpus tpu-vm ssh my-pod --worker=all --command="cd thinet_jax \\
    && python -m train.prune --config configs/imagenet_vgg16_thinet_gap.py \\
    --workdir /shared/runs/thinet-gap --config.data_dir=/shared/tfds \\
    --config.batch_size=1024 --num_processes=4"
"""

from configs import imagenet, imagenet_vgg16_thinet_conv


def get_config(arg: str | None = None):
  config = imagenet_vgg16_thinet_conv.get_config()
  config.head = "gap"
  config.head_finetune_epochs = 1.0
  return imagenet.apply_arg(config, arg)
