r"""Data-free compression of ResNet-56 from one image (paper App. B.10).

The student is the teacher's own clone (`target = "self"`: akamaster's
pretrained ResNet-56, 92.72% on the 1,017 exact CIFAR-10 test images),
pruned or quantised, then fine-tuned to match the dense original on
augmented patches of one image (City by default), with BatchNorm in
inference mode (`compress.bn = "frozen"`: the teacher's running statistics)
up to 50% sparsity and recomputed on the patches (`"recompute"`) from
75%. No CIFAR-10 training image is used. Arguments:

  :prune50 / :prune75 / :prune90  unstructured global magnitude pruning to
        50 / 75 / 90% of the conv and linear weights, gradual (TF-MOT
        polynomial schedule over the first half of fine-tuning);
  :int8  int8 quantisation-aware fine-tuning (per-channel weights,
        per-tensor inputs calibrated on 1,024 patches).

  python -m big_vision_sid.train --config=configs/cifar10_r56_compress.py:prune50 \
      --workdir=workdirs/r56_prune50

Rows of the comparison, at equal steps (overrides):
  no fine-tuning (one-shot pruning, or post-training int8):
      --config.total_steps=1 --config.optim.lr=0 --config.compress.schedule=one_shot \
      --config.compress.bn=frozen
  Animals instead of City:  --config.input.source='$SID_SHARED_DIR/images/animals.png'
  real CIFAR-10 training images (the paper's upper bar):
      --config.input.source='dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz[~::10]'
  noise control:  --config.input.source=noise:uniform_image
Choose settings on the validation split
(`--config.eval.dataset='tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz[::10]'`),
report on the test images once. Export the result (flax msgpack and a
safetensors state dict loadable into akamaster's resnet56):

  python -m big_vision_sid.export --workdir=workdirs/r56_prune50 --format=safetensors

Measured (2026-12-02, 2-core CPU, 1,017 exact test images, 300 steps of
batch 64, one core per run beside another run): :prune50 93.12% (agreement
98.23%) on both seeds vs dense 92.72% and one-shot 92.72% (96.46%); :int8
93.12% (99.41%), post-training int8 93.02% (98.92%); both 320-390 s of
training, <= 9 minutes wall. :prune75 (BatchNorm recomputed, lr 1e-3) City
91.84% (94.40%; seed 1 91.54%), Animals 91.74% (95.28%), real training
images 92.04% (97.05%), noise 64.70% vs one-shot 62.54%; :prune90 City
79.35% (80.33%), real images 87.71% (89.77%), vs one-shot 15.83%; the
recomputed-BatchNorm cells took 529-789 s of training, 9-14 minutes
wall on a shared core (City with both cores idle: 272 s, 4.8 minutes).
Defaults chosen on the validation split.
Full table, validation runs and sizes: README,
"Compress your model with one image".
"""

import ml_collections

from configs import common

_ARGS = {"prune50": 0.5, "prune75": 0.75, "prune90": 0.9, "int8": None}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in _ARGS:
    raise ValueError(f"Unknown config argument '{arg}'; expected one of "
                     f"{', '.join(_ARGS)}.")
  config = common.base_config()
  config.target = "self"
  config.teacher = common.akamaster_teacher(56)
  config.student = ml_collections.ConfigDict(dict(name="cifar_resnet56",
                                                  num_classes=10))
  config.input.source = common.CITY
  config.input.num_patches = 0
  config.input.batch_size = 64
  config.total_steps = 300
  config.mixing.update(dict(mode="cutmix", alpha=1.0, partner="roll"))
  # A trained network: a small learning rate and the teacher's BatchNorm
  # statistics keep it where it is. From 75% sparsity the pruned layers'
  # activations drift too far for those statistics: they are recomputed on
  # the patches, at a 10x larger lr (validation split: README).
  heavy = (_ARGS[arg] or 0.0) >= 0.75
  config.optim.update(dict(name="adam", lr=1e-3 if heavy else 1e-4,
                           schedule="cosine", warmup_steps=0))
  config.compress.bn = "recompute" if heavy else "frozen"
  if arg == "int8":
    config.compress.quantize = "int8"
  else:
    config.compress.update(dict(sparsity=_ARGS[arg], scope="global",
                                schedule="polynomial", begin_fraction=0.0,
                                end_fraction=0.5, frequency=10))
  config.log_every_steps = 25
  config.eval.every_steps = 0
  config.checkpoint.every_steps = 100
  config.checkpoint.every_seconds = 120.0
  return config
