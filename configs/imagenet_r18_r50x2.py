r"""ImageNet: resnet18 teacher -> resnet50x2 student from the City image.

Expected: 69.0% top-1 (paper, best ImageNet setting), after 200 epochs of 1.28M patches.
Runtime: days on one accelerator; see benchmarks/README.md for measured
step throughput. Recipe and multi-host launch: configs/imagenet_common.py.

  python -m big_vision_sid.train --config=configs/imagenet_r18_r50x2.py \
      --workdir=workdirs/imagenet_r18_r50x2

CPU smoke test (3 steps, batch 8, 250 dev images; the teacher weights are
downloaded from the torchvision URL on first use):

  python -m big_vision_sid.train --config=configs/imagenet_r18_r50x2.py:dev \
      --workdir=/tmp/imagenet_r18_r50x2 --config.total_steps=3 \
      --config.input.batch_size=8
"""

import ml_collections

from configs import imagenet_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return imagenet_common.imagenet_config(
      imagenet_common.torchvision_teacher("resnet18"), "resnet50x2", arg)
