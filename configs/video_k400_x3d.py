r"""Kinetics-400: X3D-XS teacher -> X3D (width 5, depth 3), from the City image.

The paper's Table 6: 51.8% on Kinetics-400 for the student distilled from
fake clips of the City image (App. B.1; recipe: configs/video_common.py;
the teacher itself: 69.12% top-1 as pytorchvideo publishes it). Not measured
here (no GPU and no Kinetics videos on this machine).

  python -m big_vision_sid.train --config=configs/video_k400_x3d.py \
      --workdir=workdirs/video_k400 \
      --config.eval.dataset='video:folder:/path/to/kinetics400/val'

The teacher is pytorchvideo's model-zoo X3D-XS (`torch.hub.load(
"facebookresearch/pytorchvideo", "x3d_xs", pretrained=True)` in the
official code): its X3D_XS.pyth is downloaded once to
~/.cache/big_vision_sid/ on first use and read without torch (format
'pytorchvideo_x3d'). Offline, download it elsewhere and set
teacher.checkpoint to the file.

Evaluation: Kinetics-400 is not in TFDS; give its validation videos as
`video:folder:ROOT`, ROOT/<class>/<video>.mp4 (the layout pytorchvideo's
Kinetics dataset reads, and the official code's `val/`). 10 clips per
video, averaged.
"""

import ml_collections

from configs import video_common

X3D_XS_URL = ("https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/"
              "X3D_XS.pyth")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return video_common.video_config(
      video_common.x3d_xs_teacher(400, "~/.cache/big_vision_sid/X3D_XS.pyth",
                                  X3D_XS_URL),
      "video:folder:$SID_SHARED_DIR/data/kinetics400/val", arg)
