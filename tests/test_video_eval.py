"""Labelled videos: 10 temporal clips per video, decoding, the clip-averaging evaluator."""

import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import config_checks
from big_vision_sid import evaluators
from configs import video_ucf101_x3d
from input_pipeline import eval_data
from input_pipeline.video import labeled

av = pytest.importorskip("av")


def write_video(path, frames, codec="ffv1", pix_fmt="bgr0", rate=25):
  """Encodes uint8 [n, H, W, 3] frames with PyAV (ffv1: lossless)."""
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame,
                                                             format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def numbered_frames(num, height=24, width=32):
  """Frame k is solid: red = 2 k, green = 100, blue = 7."""
  frames = np.zeros((num, height, width, 3), np.uint8)
  frames[..., 0] = (2 * np.arange(num))[:, None, None]
  frames[..., 1], frames[..., 2] = 100, 7
  return frames


def test_clip_frame_indices_follow_pytorchvideos_sampler():
  # 100 frames: windows of 48 start at k * 52 // 9; frames 0, 15, 31, 47 of
  # each (floor of linspace(0, 47, 4)).
  indices = labeled.clip_frame_indices(100)
  np.testing.assert_array_equal(indices[:, 0],
                                [0, 5, 11, 17, 23, 28, 34, 40, 46, 52])
  np.testing.assert_array_equal(indices[1], [5, 20, 36, 52])
  assert indices[-1, -1] == 99
  # A video shorter than a window: all clips start at 0, the end repeats.
  np.testing.assert_array_equal(labeled.clip_frame_indices(20),
                                np.tile([0, 15, 19, 19], (10, 1)))


def test_folder_decodes_every_videos_ten_clips(tmp_path):
  lengths = {"b_run": [60, 30], "a_jump": [100]}
  for name, counts in lengths.items():
    (tmp_path / name).mkdir()
    for i, count in enumerate(counts):
      write_video(tmp_path / name / f"v{i}.mkv", numbered_frames(count))
  (tmp_path / "b_run" / "notes.txt").write_text("not a video")
  videos = eval_data.load_eval_set(f"video:folder:{tmp_path}", image_size=16)
  assert videos.class_names == ("a_jump", "b_run")
  np.testing.assert_array_equal(videos.labels, [0, 1, 1])
  assert (videos.resize_size, videos.num_clips) == (18, 30)
  batches = list(videos.clip_batches(7))
  assert len(batches) == 5
  image = np.concatenate([b["image"] for b in batches])
  video = np.concatenate([b["video"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert image.shape == (35, 4, 16, 16, 3) and image.dtype == np.uint8
  assert mask.sum() == 30 and not mask[30:].any()
  np.testing.assert_array_equal(video[:30], np.repeat([0, 1, 2], 10))
  for row in range(30):
    num = (100, 60, 30)[video[row]]
    expected = labeled.clip_frame_indices(num)[row % 10]
    np.testing.assert_array_equal(image[row, :, 8, 8, 0], 2 * expected)
  assert (image[:30, ..., 1] == 100).all()
  subset = labeled.load(f"video:folder:{tmp_path}[1:]", image_size=16)
  np.testing.assert_array_equal(subset.labels, [1, 1])


def test_h264_files_decode(tmp_path):
  (tmp_path / "c").mkdir()
  write_video(tmp_path / "c" / "v.mp4", numbered_frames(50, 48, 64),
              codec="libx264", pix_fmt="yuv420p")
  videos = labeled.load(f"video:folder:{tmp_path}", image_size=32)
  (batch,) = videos.clip_batches(10)
  red = batch["image"][:, :, 16, 16, 0].astype(int)
  np.testing.assert_allclose(red, 2 * labeled.clip_frame_indices(50), atol=4)


def test_bad_folders_fail_in_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    labeled.load(f"video:folder:{tmp_path}/missing", image_size=16)
  (tmp_path / "empty_class").mkdir()
  with pytest.raises(FileNotFoundError, match="no .mp4/.avi"):
    labeled.load(f"video:folder:{tmp_path}", image_size=16)
  with pytest.raises(ValueError, match="must be one of video:folder"):
    labeled.load("video:zip:x", image_size=16)
  (tmp_path / "empty_class" / "broken.mp4").write_bytes(b"not a video")
  videos = labeled.load(f"video:folder:{tmp_path}", image_size=16)
  with pytest.raises(ValueError, match="Cannot decode video"):
    list(videos.clip_batches(4))


class _FakeVideos:
  """Three videos of 10 clips whose 'image' rows are the logits to predict."""

  def __init__(self, clip_logits, labels):
    self.clip_logits = clip_logits  # [videos, 10, C]
    self.labels = np.asarray(labels, np.int32)
    self.num_clips = clip_logits.shape[0] * clip_logits.shape[1]
    self.name = "fake"

  def clip_batches(self, batch_size):
    flat = self.clip_logits.reshape(-1, self.clip_logits.shape[-1])
    ids = np.repeat(np.arange(len(self.labels)), self.clip_logits.shape[1])
    for first in range(0, len(flat), batch_size):
      rows = slice(first, first + batch_size)
      count = len(flat[rows])
      pad = batch_size - count
      yield {"image": np.pad(flat[rows], ((0, pad), (0, 0))),
             "video": np.pad(ids[rows], (0, pad)).astype(np.int32),
             "mask": np.arange(batch_size) < count}


def test_evaluator_averages_clip_probabilities_per_video():
  log = np.log
  weak0, strong1 = log([0.55, 0.45]), log([0.01, 0.99])
  strong0, weak1 = log([0.99, 0.01]), log([0.45, 0.55])
  clip_logits = np.stack([
      # Label 0: 6 strong 0, 4 weak 1 -> 0 (right).
      np.stack([strong0] * 6 + [weak1] * 4),
      # Label 1: 7 clips vote 0 weakly, 3 say 1 strongly: the mean is
      # (7 * 0.45 + 3 * 0.99) / 10 = 0.612 for class 1 (right; a vote of the
      # clips would be wrong).
      np.stack([weak0] * 7 + [strong1] * 3),
      # Label 0, every clip says 1 (wrong).
      np.stack([weak1] * 10)]).astype(np.float32)
  eval_set = _FakeVideos(clip_logits, [0, 1, 0])

  def predict(images):
    logits = jnp.asarray(images)
    return logits, logits[:, ::-1]  # The "teacher" disagrees everywhere.

  metrics = evaluators.EVALUATORS.get("video_clips")(predict, eval_set, 8)
  assert metrics["student_top1"] == pytest.approx(200 / 3)
  assert metrics["teacher_top1"] == pytest.approx(100 / 3)
  assert metrics["agreement"] == 0.0
  assert (metrics["eval_examples"], metrics["eval_clips"]) == (3, 30)
  with pytest.raises(ValueError, match="needs labelled videos"):
    evaluators.EVALUATORS.get("video_clips")(predict, object(), 8)


def test_config_checks_pair_video_eval_sets_with_their_evaluator():
  config = video_ucf101_x3d.get_config()
  assert config_checks.check_config(config) == []
  config.eval.name = "classification"
  with pytest.raises(config_checks.ConfigError, match="take eval.name='video_clips'"):
    config_checks.check_config(config)
  config = video_ucf101_x3d.get_config()
  config.input.video.short_side = (120, 229)
  config.input.video.clip_frames = 20
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.check_config(config)
  assert "is below input.patch_size=160" in str(error.value)
  assert "spans 20 frames, more than the fake clips' frames=16" in str(
      error.value)
  config = video_ucf101_x3d.get_config()
  config.input.source = "video:folder:/data/ucf"
  with pytest.raises(config_checks.ConfigError, match="for evaluation"):
    config_checks.check_config(config)
  config = video_ucf101_x3d.get_config()
  config.input.video.update(dict(clip_frames=8, augmix_depth=0))
  with pytest.raises(config_checks.ConfigError, match="augmix_depth=0"):
    config_checks.check_config(config)
  config.input.video.augmix_depth = 2
  assert config_checks.check_config(config) == [
      "input.video.clip_frames=8, but video eval clips have 4 frames"]


def test_tfds_videos_are_read_in_order(monkeypatch):
  import input_pipeline  # pylint: disable=g-import-not-at-top
  tf = input_pipeline.import_tensorflow()
  from input_pipeline import labeled_data  # pylint: disable=g-import-not-at-top
  videos = np.stack([numbered_frames(30, 20, 20) + i for i in range(3)])
  requested = []

  class FakeBuilder:
    class info:  # pylint: disable=invalid-name
      features = {"label": type("Label", (), {"names": ["x", "y"]})()}

    def as_dataset(self, split, shuffle_files, decoders):
      requested.append((split, shuffle_files, decoders is None))
      return tf.data.Dataset.from_tensor_slices(
          {"video": videos, "label": np.array([1, 0, 1])})

  monkeypatch.setattr(labeled_data, "prepared_tfds_builder",
                      lambda name: FakeBuilder())
  loaded = labeled.load("video:tfds:fake:test", image_size=16, max_examples=2)
  np.testing.assert_array_equal(loaded.labels, [1, 0])
  assert loaded.class_names == ("x", "y")
  batches = list(loaded.clip_batches(20))
  np.testing.assert_array_equal(batches[0]["video"], np.repeat([0, 1], 10))
  # Video 1 is video 0 plus 1; its frames are those clip_frame_indices names.
  red = batches[0]["image"][:, :, 8, 8, 0].astype(int)
  np.testing.assert_array_equal(red[10:] - red[:10], 1)
  np.testing.assert_array_equal(red[:10], 2 * labeled.clip_frame_indices(30))
  # Labels skip decoding the videos; reading clips decodes them.
  assert requested == [("test", False, False), ("test", False, True)]
