"""The log-Mel front end: waveforms -> log-Mel spectrograms, in jax.

STFT with 25-ms Hann windows (400 samples at 16 kHz, zero-padded to a
512-point FFT) every 10 ms (160 samples), frames centred on t * hop with
zero padding at the ends (librosa's `center=True, pad_mode='constant'`), so
a 1-s clip has 101 frames; power spectrum; 64 Mel bands between 60 and
7,800 Hz (Slaney's Mel scale and area normalisation, librosa's default);
natural log with a floor of 1e-6. The filterbank is computed once in numpy
and is a constant of the jitted program, so the front end runs wherever the
step runs (GPU/TPU without TensorFlow) and costs no parameters.

The audio networks call `log_mel` as their first layer (models/audio_cnn.py).
"""

import functools

import jax.numpy as jnp
import numpy as np

from input_pipeline.audio import SAMPLE_RATE

WINDOW = 400
HOP = 160
N_FFT = 512
N_MELS = 64
FMIN_HZ = 60.0
FMAX_HZ = 7800.0
LOG_FLOOR = 1e-6

# Slaney's Mel scale: linear below 1 kHz (200/3 Hz per Mel), logarithmic above.
_LINEAR_HZ_PER_MEL = 200.0 / 3
_BREAK_HZ = 1000.0
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
  hz = np.asarray(hz, np.float64)
  linear = hz / _LINEAR_HZ_PER_MEL
  break_mel = _BREAK_HZ / _LINEAR_HZ_PER_MEL
  with np.errstate(divide="ignore"):
    log = break_mel + np.log(np.maximum(hz, 1e-10) / _BREAK_HZ) / _LOG_STEP
  return np.where(hz >= _BREAK_HZ, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
  mel = np.asarray(mel, np.float64)
  break_mel = _BREAK_HZ / _LINEAR_HZ_PER_MEL
  return np.where(mel >= break_mel,
                  _BREAK_HZ * np.exp(_LOG_STEP * (mel - break_mel)),
                  mel * _LINEAR_HZ_PER_MEL)


@functools.lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                   n_mels: int = N_MELS, fmin: float = FMIN_HZ,
                   fmax: float = FMAX_HZ) -> np.ndarray:
  """Triangular Mel filters, float32 [n_fft // 2 + 1, n_mels].

  Band m rises linearly from Mel edge m to m + 1 and falls to m + 2 (n_mels
  + 2 edges equally spaced in Mel between fmin and fmax) and is scaled by
  2 / (width in Hz), so every band has the same area.
  """
  frequencies = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  rising = (frequencies - lower) / (centre - lower)
  falling = (upper - frequencies) / (upper - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights *= 2.0 / (upper - lower)
  return weights.T.astype(np.float32)


def _window() -> np.ndarray:
  """The periodic Hann window of WINDOW samples, centred in N_FFT."""
  window = np.hanning(WINDOW + 1)[:-1]
  left = (N_FFT - WINDOW) // 2
  return np.pad(window, (left, N_FFT - WINDOW - left)).astype(np.float32)


def num_frames(num_samples: int) -> int:
  """STFT frames of a waveform: 1 + T // HOP (101 for one second)."""
  return 1 + num_samples // HOP


def mel_power(waveform: jnp.ndarray) -> jnp.ndarray:
  """Mel power spectrogram, float32 [B, frames, N_MELS], of [B, T] waveforms."""
  waveform = jnp.asarray(waveform, jnp.float32)
  padded = jnp.pad(waveform, ((0, 0), (N_FFT // 2, N_FFT // 2)))
  rows = (HOP * np.arange(num_frames(waveform.shape[1]))[:, None]
          + np.arange(N_FFT))
  spectrum = jnp.fft.rfft(padded[:, rows] * _window(), axis=-1)
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  return jnp.dot(power, mel_filterbank())


def log_mel(waveform: jnp.ndarray) -> jnp.ndarray:
  """log(Mel power + 1e-6), float32 [B, frames, N_MELS], of [B, T] waveforms
  at full scale 1.0."""
  return jnp.log(mel_power(waveform) + LOG_FLOOR)
