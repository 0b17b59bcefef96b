r"""ImageNet: resnet18 teacher -> resnet50 student from the City image.

Expected: 66.2% top-1 (official release), after 200 epochs of 1.28M patches.
Runtime: days on one accelerator; see benchmarks/README.md for measured
step throughput. Recipe and multi-host launch: configs/imagenet_common.py.

  python -m big_vision_sid.train --config=configs/imagenet_r18_r50.py \
      --workdir=workdirs/imagenet_r18_r50

CPU smoke test (3 steps, batch 8, 250 dev images; the teacher weights are
downloaded from the torchvision URL on first use):

  python -m big_vision_sid.train --config=configs/imagenet_r18_r50.py:dev \
      --workdir=/tmp/imagenet_r18_r50 --config.total_steps=3 \
      --config.input.batch_size=8
"""

import ml_collections

from configs import imagenet_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return imagenet_common.imagenet_config(
      imagenet_common.torchvision_teacher("resnet18"), "resnet50", arg)
