"""Labelled audio readers, the segment-averaging evaluator and bad audio input."""

import numpy as np
import pytest
import soundfile

from big_vision_sid import cli
from big_vision_sid import evaluators
from input_pipeline import config
from input_pipeline import eval_data
from input_pipeline import train_data
from input_pipeline.audio import SEGMENT_SAMPLES
from input_pipeline.audio import labeled
from input_pipeline.audio import recording

SR = 16_000


def _keywords_npz(tmp_path, name="kw.npz", **extra):
  """12 one-second clips: 'train' speakers 0-4, 'test' speaker 9."""
  rng = np.random.default_rng(0)
  speakers = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 9, 9])
  path = tmp_path / name
  np.savez(path, audio=rng.integers(-999, 999, (12, SR)).astype(np.int16),
           label=np.arange(12) % 3, speaker=speakers,
           split=np.array(["train"] * 10 + ["test"] * 2),
           class_names=np.array(["yes", "no", "up"]), **extra)
  return path


def _write_wav(path, seconds, value, rate=SR, channels=1):
  path.parent.mkdir(parents=True, exist_ok=True)
  samples = np.full((int(seconds * rate), channels), value, np.int16)
  soundfile.write(path, samples, rate, subtype="PCM_16")


def test_npz_splits_and_speaker_subsets_are_disjoint(tmp_path):
  path = _keywords_npz(tmp_path)
  spec = f"audio:npz:{path}"
  train = labeled.load(f"{spec}:train")
  assert train.num_examples == 10 and train.class_names == ("yes", "no", "up")
  held_out = labeled.load(f"{spec}:train[speakers::5]")
  rest = labeled.load(f"{spec}:train[~speakers::5]")
  # Speakers 0..4 sorted: [::5] keeps speaker 0 (clips 0 and 1) only.
  np.testing.assert_array_equal(held_out.labels, [0, 1])
  assert held_out.num_examples + rest.num_examples == 10
  full = np.load(path)
  np.testing.assert_array_equal(held_out.clip(1), full["audio"][1])
  np.testing.assert_array_equal(rest.clip(0), full["audio"][2])
  assert labeled.load(f"{spec}:test").num_examples == 2
  assert labeled.load(f"{spec}:train[::3]").num_examples == 4
  assert labeled.load(f"{spec}", max_examples=5).num_examples == 5
  # The eval-set entry point returns the same clips.
  assert eval_data.load_eval_set(f"{spec}:test", image_size=32).num_examples == 2


def test_folder_of_wavs_by_class_with_speakers(tmp_path):
  root = tmp_path / "words"
  _write_wav(root / "yes" / "aa_nohash_0.wav", 1.0, 5)
  _write_wav(root / "yes" / "bb_nohash_0.wav", 0.5, 6)
  _write_wav(root / "no" / "aa_nohash_1.wav", 2.5, 7)
  _write_wav(root / "_background_noise_" / "hum.wav", 3.0, 1)
  clips = labeled.load(f"audio:folder:{root}")
  assert clips.class_names == ("no", "yes")
  np.testing.assert_array_equal(clips.labels, [0, 1, 1])
  assert [len(clips.clip(i)) for i in range(3)] == [40000, 16000, 8000]
  assert clips.clip(2)[0] == 6
  np.testing.assert_array_equal(clips.num_segments(), [2, 1, 1])
  # Speaker 'aa' (sorted first) holds clips 0 and 1.
  assert labeled.load(f"audio:folder:{root}[speakers:1]").num_examples == 2


def _segment_voting_predict(num_classes=4):
  """Logits that vote for the class written in each segment's first sample."""

  def predict(images):
    votes = images[:, 0, 0].astype(np.int64)
    student = 5.0 * np.eye(num_classes)[votes]
    teacher = 5.0 * np.eye(num_classes)[(votes + 1) % num_classes]
    return student, teacher
  return predict


def test_segment_average_counted_exactly_on_long_clips(tmp_path):
  # Class folders k0..k3, so labels are the class ids the network votes for.
  # Each clip is made of 1-s pieces; a segment votes for its first sample.
  layout = {  # class: [(file, votes per second, seconds)]
      "k0": [("e", [0], 1.0)],           # 0 -> right
      "k1": [("a", [1, 1, 2], 3.0),      # 1 -> right
             # 2.5 s: segments vote 2, 3 (tie -> 2, wrong); counting the last
             # half second (a vote for 1) would make it right.
             ("b", [2, 3, 1], 2.5)],
      "k2": [("d", [0, 2, 2, 0], 4.0)],  # tie 0/2 -> 0: wrong
      "k3": [("c", [3], 0.4)],           # one zero-padded segment: right
  }
  root = tmp_path / "long"
  for label_dir, files in layout.items():
    for name, votes, seconds in files:
      pieces = np.concatenate([np.full(SR, v, np.int16) for v in votes])
      path = root / label_dir / f"{name}.wav"
      path.parent.mkdir(parents=True, exist_ok=True)
      soundfile.write(path, pieces[:int(seconds * SR)], SR, subtype="PCM_16")
  eval_set = eval_data.load_eval_set(f"audio:folder:{root}", image_size=32)
  np.testing.assert_array_equal(eval_set.labels, [0, 1, 1, 2, 3])  # e a b d c
  np.testing.assert_array_equal(eval_set.num_segments(), [1, 3, 2, 4, 1])
  # Batches of 3 segments: clips a and d span batches.
  result = evaluators.EVALUATORS.get("audio_segments")(
      _segment_voting_predict(), eval_set, 3)
  assert result["eval_examples"] == 5 and result["eval_segments"] == 11
  assert result["student_top1"] == pytest.approx(60.0)  # e, a, c.
  # The teacher votes id + 1: e 1, a 2, b tie 3/0 -> 0, d tie 1/3 -> 1, c 0.
  assert result["teacher_top1"] == 0.0
  assert result["agreement"] == 0.0
  assert result["student_top5"] == result["teacher_top5"] == 100.0  # 4 classes.


def test_segment_batches_cover_every_segment_once(tmp_path):
  clips = labeled.load(f"audio:npz:{_keywords_npz(tmp_path)}")
  batches = list(clips.segment_batches(5))
  assert len(batches) == 3 and batches[-1]["mask"].sum() == 2
  segments = np.concatenate([b["image"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(segments[:, :, 0],
                                np.load(clips.name.split(":", 2)[2])["audio"])
  assert segments.shape[1] == SEGMENT_SAMPLES


def _one_line_user_error(call):
  with pytest.raises(cli.USER_ERRORS) as info:
    call()
  message = cli.user_error_message(info.value)
  assert "\n" not in message
  return message


def test_bad_recordings_fail_in_one_line(tmp_path):
  load = lambda spec: lambda: recording.load_recording(
      spec, seed=0, clip_seconds=2.0, noise_seconds=300.0)
  assert "does not exist" in _one_line_user_error(
      load(f"audio:{tmp_path}/missing.wav"))
  _write_wav(tmp_path / "44k.wav", 3.0, 1, rate=44100)
  assert "sample rate of 44100 Hz" in _one_line_user_error(
      load(f"audio:{tmp_path}/44k.wav"))
  _write_wav(tmp_path / "stereo.flac", 3.0, 1, channels=2)
  assert "has 2 channels" in _one_line_user_error(
      load(f"audio:{tmp_path}/stereo.flac"))
  _write_wav(tmp_path / "short.wav", 1.5, 1)
  assert "1.50 s long, shorter than one clip" in _one_line_user_error(
      load(f"audio:{tmp_path}/short.wav"))
  (tmp_path / "junk.wav").write_bytes(b"not audio")
  assert "cannot read" in _one_line_user_error(load(f"audio:{tmp_path}/junk.wav"))
  np.savez(tmp_path / "no_rate.npz", audio=np.zeros(SR * 3, np.int16))
  assert "lacks key(s) ['sample_rate']" in _one_line_user_error(
      load(f"audio:{tmp_path}/no_rate.npz"))
  assert "noise kinds are white, pink" in _one_line_user_error(
      load("audio:noise:brown"))


def test_bad_labelled_sets_fail_in_one_line(tmp_path):
  path = _keywords_npz(tmp_path)
  assert "no clips of split 'val'" in _one_line_user_error(
      lambda: labeled.load(f"audio:npz:{path}:val"))
  assert "does not exist" in _one_line_user_error(
      lambda: labeled.load(f"audio:npz:{tmp_path}/nope.npz"))
  wrong_rate = _keywords_npz(tmp_path, "8k.npz", sample_rate=8000)
  assert "8000 Hz" in _one_line_user_error(
      lambda: labeled.load(f"audio:npz:{wrong_rate}"))
  _write_wav(tmp_path / "stereo" / "yes" / "a.wav", 1.0, 1, channels=2)
  assert "2 channels" in _one_line_user_error(
      lambda: labeled.load(f"audio:folder:{tmp_path}/stereo"))
  (tmp_path / "empty" / "yes").mkdir(parents=True)
  assert "no .wav/.flac/.ogg files" in _one_line_user_error(
      lambda: labeled.load(f"audio:folder:{tmp_path}/empty"))
  assert "must be one of audio:folder:ROOT" in _one_line_user_error(
      lambda: labeled.parse("audio:zip:/x"))
  no_speakers = tmp_path / "nospk.npz"
  np.savez(no_speakers, audio=np.zeros((2, SR), np.int16), label=[0, 1])
  assert "no speaker ids" in _one_line_user_error(
      lambda: labeled.load(f"audio:npz:{no_speakers}[speakers::2]"))


def test_labelled_training_batches_carry_labels(tmp_path):
  cfg = config.default_input_config()
  cfg.source = f"audio:npz:{_keywords_npz(tmp_path)}:train"
  cfg.batch_size = 4
  cfg.prefetch = 0
  cfg.audio.update(pad_seconds=0.1, augment_p=0.5)
  assert train_data.has_labels(cfg) and train_data.patches_per_epoch(cfg) == 10
  batches = train_data.make_train_iterator(cfg, seed=0)
  seen = [next(batches) for _ in range(5)]  # Two epochs of 10.
  labels = np.concatenate([b["label"] for b in seen])
  # Each epoch shows every example once.
  assert sorted(labels[:10].tolist()) == sorted((np.arange(10) % 3).tolist())
  assert seen[0]["image"].shape == (4, SR, 1) and seen[0]["label"].dtype == np.int32
  again = train_data.make_train_iterator(cfg, seed=0, start_step=3)
  np.testing.assert_array_equal(next(again)["image"], seen[3]["image"])
