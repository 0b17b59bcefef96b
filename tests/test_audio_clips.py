"""Audio clips and batches: pure functions of (seed, index), resumable, sharded."""

import os

import numpy as np
import pytest

from input_pipeline import config
from input_pipeline import train_data
from input_pipeline.audio import SEGMENT_SAMPLES
from input_pipeline.audio import clips
from input_pipeline.audio import recording

SR = 16_000


def _recording_file(tmp_path, seconds=6.0, name="rec.npz"):
  t = np.arange(int(seconds * SR)) / SR
  audio = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
  path = tmp_path / name
  np.savez(path, audio=(audio * 32767).astype(np.int16), sample_rate=SR)
  return path


def _cfg(source, **audio):
  cfg = config.default_input_config()
  cfg.source = source
  cfg.num_patches = 40
  cfg.batch_size = 6
  cfg.prefetch = 0
  cfg.audio.update(audio)
  return cfg


def test_clip_is_a_pure_function_of_seed_and_index(tmp_path):
  cfg = _cfg(f"audio:{_recording_file(tmp_path)}")
  rec = clips.load_recording(cfg, seed=0)
  batch = clips.generate_clips(rec, 0, np.arange(12), cfg.audio)
  assert batch.shape == (12, 2 * SR) and batch.dtype == np.int16
  # Any batching or order gives the same clip for the same index.
  np.testing.assert_array_equal(
      clips.generate_clips(rec, 0, np.array([7, 3]), cfg.audio),
      batch[[7, 3]])
  assert not np.array_equal(clips.generate_clips(rec, 1, [3], cfg.audio)[0],
                            batch[3])
  # Unaugmented clips are exact stretches of the recording.
  cfg.audio.augment_p = 0.0
  plain = clips.generate_clips(rec, 0, np.arange(5), cfg.audio)
  for clip in plain:
    starts = np.flatnonzero(
        np.all(np.lib.stride_tricks.sliding_window_view(
            np.round(rec * 32768).astype(np.int16), 64)[:, :] == clip[:64],
               axis=1))
    assert len(starts) >= 1


def test_iterator_resumes_and_shards_exactly(tmp_path):
  cfg = _cfg(f"audio:{_recording_file(tmp_path)}")
  full = train_data.make_train_iterator(cfg, seed=3)
  steps = [next(full) for _ in range(9)]  # 54 samples: a second epoch of 40.
  assert steps[0]["image"].shape == (6, SEGMENT_SAMPLES, 1)
  assert steps[0]["image"].dtype == np.int16 and "label" not in steps[0]
  resumed = train_data.make_train_iterator(cfg, seed=3, start_step=7)
  np.testing.assert_array_equal(next(resumed)["image"], steps[7]["image"])
  hosts = [next(train_data.make_train_iterator(
      cfg, seed=3, start_step=7, process_index=h, process_count=3))["image"]
           for h in range(3)]
  np.testing.assert_array_equal(np.concatenate(hosts), steps[7]["image"])
  # A prefetching iterator yields the same batches.
  cfg.prefetch = 3
  prefetched = train_data.make_train_iterator(cfg, seed=3)
  for step in steps:
    np.testing.assert_array_equal(next(prefetched)["image"], step["image"])


def test_cache_round_trips_and_is_keyed_by_every_field(tmp_path):
  source = f"audio:{_recording_file(tmp_path)}"
  cfg = _cfg(source)
  cfg.cache_dir = str(tmp_path / "cache")
  cached = clips.cached_clips(cfg, seed=0)
  rec = clips.load_recording(cfg, seed=0)
  np.testing.assert_array_equal(
      cached, clips.generate_clips(rec, 0, np.arange(40), cfg.audio))
  assert [f for f in os.listdir(cfg.cache_dir)] == [
      os.path.basename(cached.filename)]
  # The cached and the generated stream give the same batches.
  from_cache = next(train_data.make_train_iterator(cfg, seed=0))
  cfg.cache_dir = ""
  generated = next(train_data.make_train_iterator(cfg, seed=0))
  np.testing.assert_array_equal(from_cache["image"], generated["image"])
  base = clips.clip_set_fields(cfg, 0)
  for field, value in (("clip_seconds", 3.0), ("augment_p", 0.5),
                       ("augmentations", ("gain",)), ("noise_seconds", 60.0)):
    other = _cfg(source, **{field: value})
    assert clips.clip_set_fields(other, 0) != base, field
  assert clips.clip_set_fields(cfg, 1) != base
  other = _cfg(source)
  other.num_patches = 41
  assert clips.clip_set_fields(other, 0) != base


def test_crop_is_a_keyed_window_with_zero_padding():
  clip = np.arange(1, 3 * SR + 1, dtype=np.int64).astype(np.int16)
  windows = clips.crop([clip] * 50, 0, np.arange(50), pad_seconds=0.0)
  starts = windows[:, 0].astype(np.int64) - 1
  for window, start in zip(windows, starts):
    np.testing.assert_array_equal(window, clip[start:start + SEGMENT_SAMPLES])
  assert starts.min() >= 0 and starts.max() <= 2 * SR and len(set(starts)) > 40
  np.testing.assert_array_equal(
      windows, clips.crop([clip] * 50, 0, np.arange(50), pad_seconds=0.0))
  # A 1-s clip padded by 0.1 s shifts by up to 1,600 samples either way.
  short = np.ones(SR, np.int16)
  shifted = clips.crop([short] * 200, 0, np.arange(200), pad_seconds=0.1)
  leading = np.argmax(shifted != 0, axis=1)
  trailing = np.argmax(shifted[:, ::-1] != 0, axis=1)
  assert np.all((leading == 0) | (trailing == 0))
  assert max(leading.max(), trailing.max()) > 1400
  assert max(leading.max(), trailing.max()) <= 1600
  # Shorter than a window: zero-padded at the end.
  tiny = clips.crop([np.ones(100, np.int16)], 0, [0], pad_seconds=0.0)
  assert tiny[0, :100].tolist() == [1] * 100 and not tiny[0, 100:].any()


def test_noise_recordings_are_seeded_and_coloured():
  white = recording.load_recording("audio:noise:white", seed=0,
                                   clip_seconds=2.0, noise_seconds=4.0)
  assert white.shape == (4 * SR,) and white.dtype == np.float32
  assert np.sqrt(np.mean(white ** 2)) == pytest.approx(0.1, rel=1e-4)
  np.testing.assert_array_equal(
      white, recording.noise_recording("white", 0, 4.0).astype(np.float32))
  assert not np.array_equal(white, recording.noise_recording("white", 1, 4.0))
  pink = recording.noise_recording("pink", 0, 4.0)
  power = np.abs(np.fft.rfft(pink)) ** 2
  octave = lambda lo: power[4 * lo:8 * lo].sum()  # 4 bins per Hz.
  assert octave(2000) / octave(500) == pytest.approx(1.0, rel=0.2)
