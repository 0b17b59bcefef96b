"""The jax log-Mel front end against librosa (an independent implementation)."""

import jax
import numpy as np
import pytest

from input_pipeline.audio import frontend

librosa = pytest.importorskip("librosa")

SR = 16_000
_LIBROSA_ARGS = dict(sr=SR, n_fft=512, hop_length=160, win_length=400,
                     window="hann", center=True, pad_mode="constant",
                     power=2.0, n_mels=64, fmin=60.0, fmax=7800.0)


def _test_signal(seconds=1.0):
  t = np.arange(int(seconds * SR)) / SR
  chirp = np.sin(2 * np.pi * (100 + 3000 * t) * t)
  noise = np.random.default_rng(0).normal(0, 0.05, len(t))
  return (0.3 * chirp + noise).astype(np.float32)


def test_filterbank_matches_librosa_slaney():
  ours = frontend.mel_filterbank()
  theirs = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=60.0,
                               fmax=7800.0)
  assert ours.shape == (257, 64)
  np.testing.assert_allclose(ours, theirs.T, rtol=1e-5, atol=1e-9)


def test_mel_spectrogram_matches_librosa():
  x = _test_signal(2.37)  # Not a whole number of hops.
  theirs = librosa.feature.melspectrogram(y=x, **_LIBROSA_ARGS).T
  ours = np.asarray(jax.jit(frontend.mel_power)(x[None]))[0]
  assert ours.shape == theirs.shape == (frontend.num_frames(len(x)), 64)
  np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=1e-6 * theirs.max())
  log = np.asarray(frontend.log_mel(x[None]))[0]
  np.testing.assert_allclose(log, np.log(theirs + 1e-6), atol=2e-3)


def test_one_second_has_101_frames_and_batches_are_independent():
  x = np.stack([_test_signal(), np.zeros(SR, np.float32)])
  log = np.asarray(frontend.log_mel(x))
  assert log.shape == (2, 101, 64)
  np.testing.assert_allclose(log[0], np.asarray(frontend.log_mel(x[:1]))[0],
                             atol=1e-5)
  np.testing.assert_array_equal(log[1], np.log(1e-6).astype(np.float32))
