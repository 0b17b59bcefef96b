r"""UCF-101: X3D-XS teacher (fine-tuned on UCF-101) -> X3D (width 5, depth 3).

The paper's Table 6: 75.2% on UCF-101 for the student distilled from fake
clips of the City image (App. B.1; recipe: configs/video_common.py). Not
measured here (no GPU, no teacher, no UCF-101 on this machine).

  python -m big_vision_sid.train --config=configs/video_ucf101_x3d.py \
      --workdir=workdirs/video_ucf101 \
      --config.teacher.checkpoint=/path/to/x3d_xs_ucf101.ckpt \
      --config.eval.dataset='video:folder:/path/to/UCF101/test'

The teacher: no public checkpoint exists ("you need to pretrain this", the
official code says). Fine-tune pytorchvideo's Kinetics-400 X3D-XS
(configs/video_k400_x3d.py has its URL) on UCF-101 split 1 with a
101-class head, 4 frames at stride 12 and 160-px crops, e.g. with
pytorchvideo's or PySlowFast's training scripts, and point
teacher.checkpoint at the result: a pytorchvideo state dict, as saved by
`torch.save(model.state_dict())`, a PyTorch Lightning checkpoint of a
module whose `model` is the X3D (keys `model.blocks...`, the official
code's), or a `{'model_state': ...}` file.

Evaluation: the default reads tfds `ucf101` (test split 1, 256x256 frames;
prepared once with `tfds build ucf101`); with the videos on disk use
`video:folder:ROOT` with ROOT/<class>/<video>.avi holding the 3,783 split-1
test videos (UCF-101's testlist01.txt). 10 clips per video, averaged.
"""

import ml_collections

from configs import video_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return video_common.video_config(
      video_common.x3d_xs_teacher(
          101, "$SID_SHARED_DIR/teachers/x3d_xs_ucf101/x3d_xs_ucf101.ckpt"),
      "video:tfds:ucf101:test", arg)
