r"""WRN-40-4 -> WRN-16-4 on CIFAR-10 from one image (paper Table 4: 93.32%).

No pretrained WRN-40-4 ships with this project or exists in ../shared. Bring
your own teacher, either
  * a Flax msgpack written by `big_vision_sid.teachers.save_flax_teacher`
    (e.g. a teacher trained with this codebase), `teacher.format=flax`, or
  * a PyTorch state dict converted by a converter of `big_vision_sid.teachers`,
and point `teacher.checkpoint` at it:

  python -m big_vision_sid.train --config=configs/cifar10_wrn40_4_wrn16_4.py \
      --workdir=workdirs/wrn40_4_wrn16_4 \
      --config.teacher.checkpoint=/path/to/wrn40_4.msgpack

Expected: ~93% after the paper's 1,000 epochs (multi-hour GPU run); the
student reaches far above chance within minutes on a GPU. Not measured here
(no teacher available).
"""

import ml_collections

from configs import cifar10_r56_r20


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = cifar10_r56_r20.get_config(arg)
  config.teacher = ml_collections.ConfigDict(dict(
      name="wrn40_4", format="flax", checkpoint="", url="",
      mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
      num_classes=10, image_size=32))
  config.student.name = "wrn16_4"
  return config
