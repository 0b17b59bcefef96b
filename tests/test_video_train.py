"""The video distillation path end to end: fake clips -> X3D -> 10-clip eval."""

import json

import numpy as np
import pytest

from configs import video_ucf101_x3d
from test_video_eval import numbered_frames
from test_video_eval import write_video

av = pytest.importorskip("av")


@pytest.mark.slow
def test_distils_fake_clips_and_evaluates_on_a_video_folder(tmp_path):
  from big_vision_sid import train  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  videos = tmp_path / "videos"
  for name in ("archery", "bowling"):
    (videos / name).mkdir(parents=True)
    for i in range(2):
      frames = numbered_frames(20, 36, 48)
      frames[..., 2] = rng.integers(0, 256, frames.shape[:-1])
      write_video(videos / name / f"v_{i}.mkv", frames)
  config = video_ucf101_x3d.get_config("smoke")
  config.student.num_classes = config.teacher.num_classes = 2
  config.eval.dataset = f"video:folder:{videos}"
  config.checkpoint.update(dict(every_steps=2, every_seconds=0.0))
  result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["steps"] == 2
  assert (result["eval_examples"], result["eval_clips"]) == (4, 40)
  for key in ("student_top1", "teacher_top1", "agreement"):
    assert 0.0 <= result[key] <= 100.0
  assert result["teacher"] == "x3d_tiny"
  metrics = [json.loads(line)
             for line in (tmp_path / "run" / "metrics.jsonl").read_text()
             .splitlines()]
  losses = [m["loss"] for m in metrics if "loss" in m]
  assert len(losses) == 2 and np.isfinite(losses).all()
  assert (tmp_path / "run" / "checkpoints").is_dir()
