r"""Supervised training of a CIFAR-10 teacher (no distillation).

Trains `config.student` (ResNet-56 by default) from scratch on the labelled
CIFAR-10 training images with cross-entropy: SGD (momentum 0.9, Nesterov)
lr 0.1 with cosine decay, weight decay 5e-4 (conv/dense kernels only), batch
128, 200 epochs (78,000 steps), random flip + pad-4 crop, no CutMix. The data
is `dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz` (the 50,000
training images as quality-75 JPEGs, decoded once and cached under
~/.cache/big_vision_sid/); `:tfds` uses tfds `cifar10` train/test instead,
for machines with the official dataset.

  python -m big_vision_sid.train --config=configs/cifar10_supervised_teacher.py \
      --workdir=workdirs/cifar10_teacher_r56

Other architectures: `--config.student.name=wrn40_4` (any model registry name;
the teacher name follows). Expected: about 93% top-1 for ResNet-56 after 200
epochs (the usual figure on the official PNG training set; the JPEG set may
cost a little). UNMEASURED here: this is a multi-hour GPU run.

`target = 'labels'` (big_vision_sid/targets.py) means "no teacher:
supervised". The trainer then loads no teacher, the step regresses the
student's logits to one-hot labels of the batches' `label` with
`distill.loss = 'cross_entropy'`, inputs are normalised with `teacher.mean` /
`teacher.std`, and at the end the trained variables are exported with
`teachers.save_flax_teacher` to `<workdir>/teacher.msgpack`. Use that file as
the teacher of a distillation run:

  python -m big_vision_sid.train --config=configs/cifar10_r56_r20.py:cpu_demo \
      --workdir=workdirs/r56_own_teacher --config.teacher.format=flax \
      --config.teacher.checkpoint=workdirs/cifar10_teacher_r56/teacher.msgpack

(`teacher.name`, `mean` and `std` of the distillation config must match the
ones used here: cifar_resnet56 with ImageNet mean/std by default.)
"""

import ml_collections

from configs import common

CIFAR10_TRAIN_JPEG = "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.base_config()
  config.student = ml_collections.ConfigDict(dict(
      name="cifar_resnet56", num_classes=10))
  config.target = "labels"
  # Not a network to load: it records the architecture and the input
  # normalisation that the exported teacher expects.
  config.teacher = ml_collections.ConfigDict(dict(
      name=config.student.get_ref("name"),
      format="flax",
      checkpoint="",
      mean=common.IMAGENET_MEAN,
      std=common.IMAGENET_STD,
      num_classes=config.student.get_ref("num_classes"),
      image_size=32,
  ))

  config.input.source = CIFAR10_TRAIN_JPEG
  config.input.batch_size = 128
  config.input.train_augment = "flip_crop"
  config.input.pad = 4
  # An epoch is the dataset: num_patches does not apply to dataset sources.
  config.input.num_patches = 0
  config.total_epochs = 200.0

  config.mixing.mode = "none"
  config.distill.loss = "cross_entropy"
  config.optim.update(dict(
      name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
      schedule="cosine", warmup_steps=0))

  config.eval.every_steps = 3900  # Every 10 epochs.
  config.checkpoint.every_steps = 3900

  if arg == "tfds":
    config.input.source = "dataset:tfds:cifar10:train"
    config.eval.dataset = "tfds:cifar10:test"
  elif arg:
    raise ValueError(
        f"Unknown config argument '{arg}'; expected 'tfds' or none.")
  return config
