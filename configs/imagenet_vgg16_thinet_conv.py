"""ThiNet-Conv on ImageNet (paper section 4.1, Table 3) from VGG-16.

conv1_1 .. conv4_3 to half width one after another, each followed by one
epoch of fine-tuning at lr 0.001 (two after the last conv of a stage), then
12 epochs at lr 0.001 dropping 10x after epochs 4 and 8 (the paper's
lengths; where it drops is our reading). The result has the `thinet-conv`
preset's shape: 131.44M params, 9.58 GFLOPs (3.23x fewer than VGG-16).

  # torchvision's VGG-16 weights (vgg16-397923af.pth saved as safetensors):
  python -m train.convert --source torchvision --arch vgg16 \\
      --weights vgg16.safetensors --out /shared/models/vgg16
  # One machine, all its GPUs:
  python -m train.prune --config configs/imagenet_vgg16_thinet_conv.py \\
      --workdir /shared/runs/thinet-conv --config.data_dir=/shared/tfds
  # A TPU pod slice (4 hosts), on every worker:
  gcloud compute tpus tpu-vm ssh my-pod --worker=all --command="cd thinet_jax \\
    && python -m train.prune --config configs/imagenet_vgg16_thinet_conv.py \\
    --workdir /shared/runs/thinet-conv --config.data_dir=/shared/tfds \\
    --config.batch_size=1024 --num_processes=4"

Keras's VGG16 (Caffe's weights): `--source keras` at convert time and
`--config.preprocessing=caffe`.
"""

from configs import imagenet


def get_config(arg: str | None = None):
  config = imagenet.base("vgg16", "/shared/models/vgg16")
  config.groups = ()  # The paper's: conv1_1 .. conv4_3.
  config.keep_ratio = 0.5
  config.finetune_epochs = 1.0  # After each group ...
  config.stage_end_epochs = 2.0  # ... two after the last of a stage.
  config.finetune_lr = 0.001
  config.num_epochs = 12.0  # Final fine-tune.
  config.learning_rate = 0.001
  config.schedule = "step"
  config.lr_drop_epochs = (4.0, 8.0)
  return imagenet.apply_arg(config, arg)
