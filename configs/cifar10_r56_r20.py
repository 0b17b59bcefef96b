r"""ResNet-56 -> ResNet-20 on CIFAR-10 from one image (paper Table 4).

Paper (Asano & Saeed, ICLR 2023): 90.70% top-1 from the Animals image vs.
92.29% when distilling with the full CIFAR-10 training set. Teacher:
akamaster's pretrained ResNet-56 (92.72% on the 1,017 exact test images here).

Paper recipe (default, `get_config()`): 50k fixed patches of the Animals
image, flip + pad-4 crop, CutMix, KL at tau=8, Adam 1e-3 cosine, batch 512,
1,000 epochs (97,600 steps; a multi-hour GPU run):

  python -m big_vision_sid.train --config=configs/cifar10_r56_r20.py \
      --workdir=workdirs/cifar10_r56_r20

CPU demo (`:cpu_demo`, what `./run.sh` runs): City image, endless stream of
fresh patches, batch 128, Adam 1e-2 with warmup, 650 steps. Measured on a
2-core CPU (2026-11-22, fresh clone): student 27.2% top-1 (teacher
92.72%), 202 img/s, 7.2 minutes end to end.

  python -m big_vision_sid.train --config=configs/cifar10_r56_r20.py:cpu_demo \
      --workdir=workdirs/cifar10_r56_r20_cpu_demo
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.base_config()
  config.teacher = common.akamaster_teacher(56)
  config.student = ml_collections.ConfigDict(dict(name="cifar_resnet20", num_classes=10))
  config.input.source = common.ANIMALS
  config.input.num_patches = 50_000
  config.input.batch_size = 512
  config.total_epochs = 1000.0
  config.optim.lr = 1e-3
  config.eval.every_steps = 2000
  config.checkpoint.every_steps = 2000

  if arg == "cpu_demo":
    # Learning per CPU-minute is the constraint: small batch, high lr, fresh
    # patches every step, no epoch bookkeeping.
    config.input.source = common.CITY
    config.input.num_patches = 0
    config.input.batch_size = 128
    config.total_epochs = None
    config.total_steps = 650
    config.optim.lr = 1e-2
    config.optim.warmup_steps = 20
    config.log_every_steps = 25
    config.eval.every_steps = 0
    config.checkpoint.every_steps = 200
    config.checkpoint.every_seconds = 60.0
  elif arg:
    raise ValueError(f"Unknown config argument '{arg}'; expected 'cpu_demo' or none.")
  return config
