"""ThiNet-Conv on the shipped VGG-16-BN/4 Fashion-MNIST baseline.

The paper's recipe (section 4.1) at CPU scale: conv1_1 .. conv4_3 pruned to
half width one after another, each followed by a short fine-tune, then a
final fine-tune. 92.57% (-1.02 points) in 13.3 minutes on 2 idle CPU
cores (README):

  python -m train.prune --config configs/fmnist_vgg16_thinet.py \
      --workdir runs/prune

ThiNet as published (the paper's greedy and least squares, nothing added),
and another criterion in its place, under the same schedule:

  python -m train.prune --config configs/fmnist_vgg16_thinet.py:paper \\
      --workdir runs/prune-paper
  python -m train.prune --config configs/fmnist_vgg16_thinet.py:paper \\
      --workdir runs/prune-l1 --config.criterion=weight_sum
"""

import ml_collections

from configs import default, fmnist_vgg16


def get_config(arg: str | None = None):
  config = fmnist_vgg16.get_config()
  config.init_checkpoint = "baselines/vgg16-fmnist"  # The shipped baseline.
  config.groups = ()  # Producers to prune, in order; () = the paper's choice.
  # Kept fraction: one value, or one per group, also on the command line
  # ('--config.keep_ratio=(0.5,0.25)'); any type, so both parse.
  config.keep_ratio = ml_collections.FieldReference(0.5, field_type=object)
  # Instead of keep_ratio: keep this fraction of the original cost, with
  # per-group keep counts from sweep.allocation (0 = off).
  config.budget = 0.0
  config.budget_metric = "flops"  # "flops" or "params".
  # The method: the best combination of the ablation
  # (benchmarks/ablation_oneshot.md); `:paper` switches to ThiNet as
  # published (configs/default.py PAPER_METHOD).
  # Selection: a name in thinet_jax.select.CRITERIA ("thinet": the paper's
  # greedy; "forward_centred": forward selection with least squares refitted
  # at every step, on the centred statistics).
  config.criterion = "forward_centred"
  config.least_squares = True  # Rescale kept channels (paper eq. 6).
  config.ridge = 0.0  # Ridge term of the least squares.
  # BatchNorm-aware: fit on centred statistics, fold the lost mean into the
  # consumer's bias / BatchNorm mean (pipeline.prune_group(centred=...)).
  config.centred = True
  # Re-estimate BatchNorm statistics after each surgery on this many of the
  # statistics batches (0 = off).
  config.bn_batches = 8
  # What each group reconstructs: "current" (the consumer's output in the
  # model being pruned, the paper's) or "original" (the unpruned model's
  # output on the same images, which also undoes the earlier groups' error).
  config.target = "original"
  # How the kept channels are fitted: "scales" (one least-squares scale per
  # kept channel, the paper's eq. 6) or "kernel" (every consumer's kernel
  # refitted by least squares after surgery, He et al. 2017).
  config.refit = "scales"
  # Knowledge distillation from the unpruned model in every fine-tune:
  # loss = (1 - w) CE + w T^2 KL (w = distill_weight; 0 = off).
  config.distill_weight = 0.5
  config.distill_temperature = 4.0
  # Plus distill_features * the feature maps' relative squared error, on
  # every map with the same name and shape in the pruned and unpruned
  # models (a ResNet's block outputs, a VGG's unpruned layers); 0 = off.
  # Models from a factory do not name their maps: logits only there.
  config.distill_features = 10.0
  # "gap" (ThiNet-GAP / Tiny, VGG only): before the groups, the flatten +
  # fc6-8 head becomes global average pooling and one dense layer fitted by
  # least squares to the old logits, then fine-tuned; "" keeps the head.
  config.head = ""
  config.head_finetune_epochs = 0.2  # Fine-tune after the head surgery.
  config.stats_mode = "sampled"  # "sampled" (paper) or "exhaustive".
  config.images_per_class = 100  # Statistics images per class (paper: 10).
  config.samples_per_image = 10  # (position, channel) samples per image.
  config.finetune_epochs = 0.1  # Fine-tune after each group, in epochs.
  config.stage_end_epochs = 0.2  # ... after the last group of a stage.
  config.finetune_lr = 0.005  # Constant learning rate of those fine-tunes.
  # The final fine-tune uses the training fields of the default config.
  config.num_epochs = 1.0  # Final fine-tune length.
  config.learning_rate = 0.01  # Final fine-tune peak learning rate.
  config.warmup_epochs = 0.0
  config.schedule = "cosine"
  return default.apply_arg(config, arg, prune=True)
