"""Audio augmentations as pure functions of a clip and counter-based draws.

The paper applies one randomly drawn augmentation of AugLy's audio set to
every clip cut from the recording. The libraries are not used: AugLy's and
audiomentations' random transforms draw their parameters from process-global
generators (Python's `random`, numpy's global state), so a clip would depend
on which worker made it and on what ran before. Here every random number is
`randomness.hash_uniform(seed, key, stream, counter)` (`randomness.Draws`), so the clip
of key k is the same in any batching, process or resumed run.

`AUGMENTATIONS` maps a name to an `Augmentation`: `sample(draws)` draws its
parameters, `input_length(params, n)` says how many input samples it reads to
make n output samples (speed-ups read more), and `apply(x, n, params, draws,
background)` maps the float segment x (full scale 1.0) to n samples. The
catalogue follows AugLy's audio set (volume, speed, pitch, tempo, noise,
background, clicks, clipping distortion, low/high-pass, reverb), each with
its own parameter range below; AugLy's harmonic/percussive split and
equaliser are not reproduced. Filters act on the FFT of the clip
(zero-phase Butterworth magnitudes), speed is band-limited FFT resampling,
time stretch a phase vocoder, and pitch shift a time stretch followed by
resampling back to the original length.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import numpy as np

from big_vision_sid.registry import Registry
from input_pipeline import randomness
from input_pipeline.audio import SAMPLE_RATE

AUGMENTATIONS = Registry("audio augmentation")
Params = dict[str, float]

# Context around a resampled segment, cropped away so that the FFT's
# wrap-around at the segment's ends stays out of the clip.
_MARGIN = 256
# Phase vocoder STFT: 32 ms Hann windows at 75% overlap.
_N_FFT = 512
_HOP = 128
# Butterworth order of the low/high-pass magnitude responses.
_FILTER_ORDER = 4
# Noise levels are relative to the clip's RMS, but never below -50 dBFS, so a
# silent stretch of the recording still gets noise.
_MIN_RMS = 10 ** (-50 / 20)
# A click: a 2-ms Hann-shaped pulse.
_CLICK = np.hanning(33)


class Streams(NamedTuple):
  """The hash streams of one use of the catalogue (see randomness.py)."""
  apply: int    # whether a clip is augmented
  choice: int   # which augmentation
  params: int   # its parameters
  samples: int  # its per-sample draws (noise, impulse responses, offsets)


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """One augmentation; see the module docstring."""
  sample: Callable[[randomness.Draws], Params]
  apply: Callable[[np.ndarray, int, Params, randomness.Draws, np.ndarray | None],
                  np.ndarray]
  input_length: Callable[[Params, int], int]


def _same_length(params: Params, length: int) -> int:
  del params
  return length


def _register(name: str, sample: Callable[[randomness.Draws], Params],
              input_length: Callable[[Params, int], int] = _same_length):
  def decorator(apply):
    AUGMENTATIONS.register(name)(Augmentation(sample, apply, input_length))
    return apply
  return decorator


def _log_uniform(u: float, low: float, high: float) -> float:
  return low * (high / low) ** u


def _rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def _scaled_to_snr(x: np.ndarray, noise: np.ndarray, snr_db: float
                   ) -> np.ndarray:
  """`noise` scaled to `snr_db` below the clip's RMS (at least _MIN_RMS)."""
  level = max(_rms(x), _MIN_RMS) * 10 ** (-snr_db / 20)
  return noise * (level / max(_rms(noise), 1e-12))


def resample(x: np.ndarray, length: int) -> np.ndarray:
  """Band-limited resampling of x to `length` samples (FFT, periodic ends).

  A sine with c whole cycles in x has c whole cycles in the output: played
  at the same rate, its frequency is multiplied by len(x) / length.
  """
  spectrum = np.fft.rfft(x)
  out = np.zeros(length // 2 + 1, complex)
  bins = min(len(spectrum), len(out))
  out[:bins] = spectrum[:bins]
  return np.fft.irfft(out, length) * (length / len(x))


def _window() -> np.ndarray:
  return np.hanning(_N_FFT + 1)[:-1]  # Periodic Hann: exact overlap-add.


def _stft(x: np.ndarray) -> np.ndarray:
  padded = np.pad(x, _N_FFT // 2)
  num_frames = 1 + (len(padded) - _N_FFT) // _HOP
  rows = _HOP * np.arange(num_frames)[:, None] + np.arange(_N_FFT)
  return np.fft.rfft(padded[rows] * _window(), axis=-1)


def _istft(spectrum: np.ndarray, length: int) -> np.ndarray:
  """Weighted overlap-add inverse of `_stft`, `length` samples."""
  window = _window()
  frames = np.fft.irfft(spectrum, _N_FFT, axis=-1) * window
  num_frames, overlap = len(frames), _N_FFT // _HOP
  out = np.zeros((num_frames + overlap - 1, _HOP))
  norm = np.zeros_like(out)
  for part in range(overlap):
    out[part:part + num_frames] += frames[:, part * _HOP:(part + 1) * _HOP]
    norm[part:part + num_frames] += np.square(
        window[part * _HOP:(part + 1) * _HOP])
  out, norm = out.reshape(-1), norm.reshape(-1)
  out = out / np.where(norm > 1e-8, norm, 1.0)
  out = out[_N_FFT // 2:_N_FFT // 2 + length]
  return np.pad(out, (0, length - len(out)))


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
  """Phase vocoder: x played `rate` times faster at the same pitch.

  Returns:
    round(len(x) / rate) samples.
  """
  spectrum = _stft(x)
  spectrum = np.concatenate([spectrum, np.zeros_like(spectrum[:1])])
  magnitudes, angles = np.abs(spectrum), np.angle(spectrum)
  steps = np.arange(0, len(spectrum) - 1, rate)
  first = np.floor(steps).astype(np.int64)
  frac = (steps - first)[:, None]
  magnitude = (1 - frac) * magnitudes[first] + frac * magnitudes[first + 1]
  # The expected phase advance of each bin per hop, plus its deviation.
  omega = 2 * np.pi * _HOP * np.arange(spectrum.shape[1]) / _N_FFT
  deviation = angles[first + 1] - angles[first] - omega
  deviation -= 2 * np.pi * np.round(deviation / (2 * np.pi))
  advance = omega + deviation
  phase = angles[0] + np.concatenate(
      [np.zeros_like(advance[:1]), np.cumsum(advance[:-1], axis=0)])
  return _istft(magnitude * np.exp(1j * phase), round(len(x) / rate))


def _filtered(x: np.ndarray, gain: Callable[[np.ndarray], np.ndarray]
              ) -> np.ndarray:
  """x through the zero-phase filter of magnitude gain(frequency in Hz)."""
  frequencies = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
  return np.fft.irfft(np.fft.rfft(x) * gain(frequencies), len(x))


def low_pass_gain(frequencies: np.ndarray, cutoff_hz: float) -> np.ndarray:
  """Butterworth low-pass magnitude |H(f)| = 1 / sqrt(1 + (f / fc)^(2n))."""
  return 1 / np.sqrt(1 + (frequencies / cutoff_hz) ** (2 * _FILTER_ORDER))


def high_pass_gain(frequencies: np.ndarray, cutoff_hz: float) -> np.ndarray:
  """Butterworth high-pass magnitude |H(f)| = 1 / sqrt(1 + (fc / f)^(2n))."""
  with np.errstate(divide="ignore"):
    ratio = np.where(frequencies > 0, cutoff_hz / frequencies, np.inf)
  return 1 / np.sqrt(1 + ratio ** (2 * _FILTER_ORDER))


def pink(white: np.ndarray) -> np.ndarray:
  """White noise shaped to a 1/f power spectrum (equal power per octave)."""
  spectrum = np.fft.rfft(white)
  spectrum[0] = 0.0
  spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
  return np.fft.irfft(spectrum, len(white))


def reverb_impulse_response(draws: randomness.Draws, rt60: float) -> np.ndarray:
  """Exponentially decaying noise, -60 dB at rt60 seconds, unit energy."""
  length = max(1, int(rt60 * SAMPLE_RATE))
  decay = np.exp(-math.log(1000) * np.arange(length) / (rt60 * SAMPLE_RATE))
  response = draws.normal(length) * decay
  return response / np.sqrt(np.sum(np.square(response)))


# --- The catalogue. ---


@_register("gain", lambda d: {"db": -12 + 24 * d.uniform()})
def _gain(x, length, params, draws, background):
  del draws, background
  return x[:length] * 10 ** (params["db"] / 20)


@_register("speed", lambda d: {"factor": _log_uniform(d.uniform(), 0.75, 4 / 3)},
           lambda p, n: math.ceil((n + 2 * _MARGIN) * p["factor"]))
def _speed(x, length, params, draws, background):
  """Faster (factor > 1) and higher by `factor`, like a resampled tape."""
  del params, draws, background
  return resample(x, length + 2 * _MARGIN)[_MARGIN:_MARGIN + length]


@_register("pitch_shift", lambda d: {"semitones": -4 + 8 * d.uniform()},
           lambda p, n: n + 2 * _MARGIN)
def _pitch_shift(x, length, params, draws, background):
  del draws, background
  ratio = 2 ** (params["semitones"] / 12)
  # Slower by `ratio` at the same pitch, then played `ratio` times faster.
  return resample(time_stretch(x, 1 / ratio), len(x))[_MARGIN:_MARGIN + length]


@_register("time_stretch", lambda d: {"rate": _log_uniform(d.uniform(), 0.8, 1.25)},
           lambda p, n: math.ceil(n * p["rate"]) + _N_FFT)
def _time_stretch(x, length, params, draws, background):
  """Faster (rate > 1) or slower at the same pitch."""
  del draws, background
  return time_stretch(x, params["rate"])[:length]


@_register("white_noise", lambda d: {"snr_db": 5 + 25 * d.uniform()})
def _white_noise(x, length, params, draws, background):
  del background
  x = x[:length]
  return x + _scaled_to_snr(x, draws.normal(length), params["snr_db"])


@_register("pink_noise", lambda d: {"snr_db": 5 + 25 * d.uniform()})
def _pink_noise(x, length, params, draws, background):
  del background
  x = x[:length]
  return x + _scaled_to_snr(x, pink(draws.normal(length)), params["snr_db"])


@_register("background", lambda d: {"snr_db": 3 + 17 * d.uniform(),
                                    "offset": d.uniform()})
def _background(x, length, params, draws, background):
  """Another stretch of the source (the recording, or all labelled clips)."""
  del draws
  x = x[:length]
  start = int(params["offset"] * max(len(background) - length + 1, 1))
  other = np.asarray(background[start:start + length], np.float64)
  if background.dtype == np.int16:
    other = other / 32768.0
  other = np.pad(other, (0, length - len(other)))
  return x + _scaled_to_snr(x, other, params["snr_db"])


@_register("clicks", lambda d: {"interval_s": 0.1 + 0.4 * d.uniform(),
                                "phase": d.uniform(),
                                "amplitude": 0.1 + 0.4 * d.uniform()})
def _clicks(x, length, params, draws, background):
  """A click every `interval_s` seconds, the first at phase * interval."""
  del draws, background
  out = np.array(x[:length], np.float64)
  interval = params["interval_s"] * SAMPLE_RATE
  half = len(_CLICK) // 2
  for centre in np.arange(params["phase"] * interval, length, interval):
    centre = int(centre)
    lo, hi = max(centre - half, 0), min(centre + half + 1, length)
    out[lo:hi] += params["amplitude"] * _CLICK[lo - centre + half:
                                                hi - centre + half]
  return out


@_register("clipping", lambda d: {"fraction": 0.01 + 0.29 * d.uniform()})
def _clipping(x, length, params, draws, background):
  """Clips the loudest `fraction` of the samples to the level below them."""
  del draws, background
  x = x[:length]
  threshold = np.quantile(np.abs(x), 1 - params["fraction"])
  return np.clip(x, -threshold, threshold) if threshold > 0 else x


@_register("low_pass", lambda d: {"cutoff_hz": _log_uniform(d.uniform(), 500, 4000)})
def _low_pass(x, length, params, draws, background):
  del draws, background
  return _filtered(x[:length], lambda f: low_pass_gain(f, params["cutoff_hz"]))


@_register("high_pass", lambda d: {"cutoff_hz": _log_uniform(d.uniform(), 200, 2000)})
def _high_pass(x, length, params, draws, background):
  del draws, background
  return _filtered(x[:length], lambda f: high_pass_gain(f, params["cutoff_hz"]))


@_register("reverb", lambda d: {"rt60": 0.2 + 0.6 * d.uniform(),
                                "wet": 0.2 + 0.4 * d.uniform()})
def _reverb(x, length, params, draws, background):
  """(1 - wet) x + wet (x * h), h a synthetic room response (see above)."""
  del background
  x = x[:length]
  response = reverb_impulse_response(draws, params["rt60"])
  size = 1 << (length + len(response) - 2).bit_length()
  wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(response, size),
                     size)[:length]
  return (1 - params["wet"]) * x + params["wet"] * wet


NAMES = tuple(AUGMENTATIONS.names())


# --- Drawing and applying one augmentation per clip. ---


@dataclasses.dataclass(frozen=True)
class Plan:
  """What happens to one clip: an augmentation name (None: none) and params."""
  name: str | None
  params: Params

  def input_length(self, length: int) -> int:
    """Samples to read to make `length` output samples."""
    if self.name is None:
      return length
    return AUGMENTATIONS.get(self.name).input_length(self.params, length)


def check_names(names: tuple[str, ...]) -> None:
  """Raises a one-line error unless every name is in the catalogue."""
  unknown = [n for n in names if n not in AUGMENTATIONS]
  if unknown:
    raise KeyError(f"Unknown audio augmentation(s) {unknown}; known: "
                   f"{', '.join(NAMES)}.")


def draw_plan(names: tuple[str, ...], p: float, seed: int, key: int,
              streams: Streams) -> Plan:
  """With probability p one of `names` (uniformly), with its parameters."""
  if not names or randomness.hash_uniform(seed, key, streams.apply) >= p:
    return Plan(None, {})
  choice = int(randomness.hash_uniform(seed, key, streams.choice) * len(names))
  name = names[min(choice, len(names) - 1)]
  return Plan(name, AUGMENTATIONS.get(name).sample(
      randomness.Draws(seed, key, streams.params)))


def apply_plan(plan: Plan, segment: np.ndarray, length: int, seed: int,
               key: int, streams: Streams,
               background: np.ndarray | None) -> np.ndarray:
  """The clip: `segment` (plan.input_length(length) samples) augmented.

  Args:
    plan: from `draw_plan` with the same seed, key and streams.
    segment: float samples (full scale 1.0), zero-padded to the input length.
    length: output samples.
    seed: data seed.
    key: the clip's key (clip index or sample position).
    streams: the streams of `draw_plan`.
    background: 1-D int16 (full scale 32768) or float samples the
      'background' augmentation mixes in.

  Returns:
    float64 [length].
  """
  if plan.name is None:
    return np.asarray(segment[:length], np.float64)
  return AUGMENTATIONS.get(plan.name).apply(
      np.asarray(segment, np.float64), length, plan.params,
      randomness.Draws(seed, key, streams.samples), background)


def to_int16(x: np.ndarray) -> np.ndarray:
  """Full-scale-1.0 floats -> int16, rounded and clipped."""
  return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
