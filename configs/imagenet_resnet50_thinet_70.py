"""ThiNet-70 on ImageNet from ResNet-50 (recipe: `configs.imagenet.resnet50`).

  python -m train.convert --source torchvision --arch resnet50 \\
      --weights resnet50.safetensors --out /shared/models/resnet50
  # One machine, all its GPUs:
  python -m train.prune --config configs/imagenet_resnet50_thinet_70.py \\
      --workdir /shared/runs/thinet-70 --config.data_dir=/shared/tfds
  # A TPU pod slice (4 hosts), on every worker:
  gcloud compute tpus tpu-vm ssh my-pod --worker=all --command="cd thinet_jax \\
    && python -m train.prune --config configs/imagenet_resnet50_thinet_70.py \\
    --workdir /shared/runs/thinet-70 --config.data_dir=/shared/tfds \\
    --config.batch_size=1024 --num_processes=4"
"""

from configs import imagenet


def get_config(arg: str | None = None):
  return imagenet.resnet50(0.70, arg)  # branch2a / 2b at 0.70 width
