"""The paper's video recipe (Table 6, App. B.1), shared by the video_* configs.

Fake clips of the City image (200k clips of 16 frames, a linear pan and zoom
between two random crops, input_pipeline/video/clips.py), each sample 4
consecutive frames, short side 183-229, crop 160, horizontal flip and AugMix
over the clip (input_pipeline/video/augment.py); CutMix over height and
width (alpha 1, a random partner: the official code's randperm), KL at
tau = 5 (nn.KLDivLoss 'batchmean', no tau^2), AdamW lr 1e-3 without weight
decay, 5 warm-up epochs then cosine, 400 epochs. The official code runs
batch 128 on each of 2 GPUs (its lr comment says "with 2 gpus"), so the
global batch here is 256: 781 steps per epoch, 312,500 steps. The teacher is
X3D-XS (4 frames at 160 px), the student X3D with width factor 5 and depth
factor 3 from scratch (models/x3d.py; `create_x3d(width_factor=5,
depth_factor=3)` of the official code, 18.1M parameters with 101 classes).
Evaluation: 10 temporal clips of 4 frames (stride 12) per video, short side
183 and centre crop 160, the clips' mean softmax (eval.name 'video_clips').

The GPU time the paper needed is not stated in the sources available here
(unmeasured); nothing of this recipe beyond `:smoke` has been run here.

`:smoke` is a CPU-sized run of the same path: a randomly initialised
x3d_tiny teacher and student, 32-px crops of 8-frame clips, 2 steps; point
eval.dataset at a folder of labelled videos (tests/test_video_train.py
writes one).
"""

import ml_collections

from configs import common

# pytorchvideo's X3D normalisation (its Kinetics transforms).
VIDEO_MEAN = (0.45, 0.45, 0.45)
VIDEO_STD = (0.225, 0.225, 0.225)
NUM_CLIPS = 200_000
GLOBAL_BATCH = 256
EPOCHS = 400
WARMUP_EPOCHS = 5


def x3d_xs_teacher(num_classes: int, checkpoint: str,
                   url: str = "") -> ml_collections.ConfigDict:
  """A pytorchvideo X3D-XS state dict (format 'pytorchvideo_x3d')."""
  return ml_collections.ConfigDict(dict(
      name="x3d_xs", format="pytorchvideo_x3d", checkpoint=checkpoint,
      url=url, mean=VIDEO_MEAN, std=VIDEO_STD, num_classes=num_classes,
      image_size=160))


def video_config(teacher: ml_collections.ConfigDict, eval_dataset: str,
                 arg: str | None) -> ml_collections.ConfigDict:
  """The paper's recipe for `teacher`, evaluated on `eval_dataset`."""
  config = common.base_config()
  config.teacher = teacher
  config.student = ml_collections.ConfigDict(dict(
      name="x3d_w5_d3", num_classes=teacher.num_classes))
  config.input.source = f"video:{common.CITY}"
  config.input.patch_size = 160
  config.input.num_patches = NUM_CLIPS
  config.input.batch_size = GLOBAL_BATCH
  config.total_epochs = float(EPOCHS)
  config.mixing.update(dict(mode="cutmix", alpha=1.0, partner="permutation"))
  config.distill.update(dict(loss="kl", temperature=5.0, tau_squared=False))
  config.optim.update(dict(
      name="adamw", lr=1e-3, weight_decay=0.0, schedule="cosine",
      warmup_steps=WARMUP_EPOCHS * (NUM_CLIPS // GLOBAL_BATCH)))
  config.log_every_steps = 100
  config.eval.update(dict(name="video_clips", dataset=eval_dataset,
                          image_size=160, batch_size=80, every_steps=0))
  config.checkpoint.update(dict(every_steps=5000, every_seconds=1800.0))
  if arg == "smoke":
    config.teacher.update(dict(name="x3d_tiny", format="random",
                               checkpoint="", url=""))
    config.student.name = "x3d_tiny"
    config.input.update(dict(patch_size=32, num_patches=64, batch_size=4,
                             backend="jax"))
    config.input.video.update(dict(frames=8, frame_size=48,
                                   short_side=(36, 44)))
    config.total_steps = 2
    config.optim.warmup_steps = 0
    config.log_every_steps = 1
    config.eval.update(dict(image_size=32, batch_size=10))
  elif arg:
    raise ValueError(f"Unknown config argument '{arg}'; expected 'smoke' or "
                     "none.")
  return config
