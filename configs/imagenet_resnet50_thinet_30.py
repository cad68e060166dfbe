"""ThiNet-30 on ImageNet (paper section 4.2, Table 5) from ResNet-50.

In each of the 16 bottlenecks, branch2a then branch2b kept at 0.30 of their
width (the block's last 1x1 conv and the shortcut keep theirs), half an
epoch of fine-tuning after each (one epoch per block, lr 0.0001), then 9
epochs at lr 0.001 dropping 10x after epochs 3 and 6 (the paper's lengths
and per-block rate; the final rate and its drops are our reading). The
paper pruned Caffe's ResNet-50 (stride in branch2a): that is
`--config.model=resnet50` with Keras-converted weights
(`train.convert --source keras`, `--config.preprocessing=caffe`);
torchvision's places the stride in branch2b (the default here).

  python -m train.convert --source torchvision --arch resnet50 \\
      --weights resnet50.safetensors --out /shared/models/resnet50
  # One machine, all its GPUs:
  python -m train.prune --config configs/imagenet_resnet50_thinet_30.py \\
      --workdir /shared/runs/thinet-30 --config.data_dir=/shared/tfds
  # A TPU pod slice (4 hosts), on every worker:
  gcloud compute tpus tpu-vm ssh my-pod --worker=all --command="cd thinet_jax \\
    && python -m train.prune --config configs/imagenet_resnet50_thinet_30.py \\
    --workdir /shared/runs/thinet-30 --config.data_dir=/shared/tfds \\
    --config.batch_size=1024 --num_processes=4"
"""

from configs import imagenet


def get_config(arg: str | None = None):
  config = imagenet.base("resnet50-torchvision", "/shared/models/resnet50")
  config.groups = ()  # The paper's: branch2a, branch2b of every block.
  config.keep_ratio = 0.30
  config.finetune_epochs = 0.5  # After each group: one epoch per block.
  config.stage_end_epochs = 0.5
  config.finetune_lr = 0.0001
  config.num_epochs = 9.0  # Final fine-tune.
  config.learning_rate = 0.001
  config.schedule = "step"
  config.lr_drop_epochs = (3.0, 6.0)
  return imagenet.apply_arg(config, arg)
