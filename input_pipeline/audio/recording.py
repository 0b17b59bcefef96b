"""The one long recording that clips are cut from (`input.source = audio:...`).

Specs (after the `audio:` prefix):

  PATH.wav | .flac | .ogg | ...   any file soundfile (libsndfile) reads
  PATH.npz                        keys `audio` (int16, full scale 32768, or
                                  float, full scale 1.0) [T] or [T, 1] and
                                  `sample_rate`
  noise:white | noise:pink        a noise recording of input.audio.
                                  noise_seconds, a pure function of the seed
                                  (the noise control of the paper's audio
                                  experiments), at -20 dBFS RMS

Paths may use `$SID_SHARED_DIR` and `~`. The recording must be 16 kHz mono
and at least one clip long; anything else is refused with one line that
says how to convert it. Returns float32 samples in [-1, 1].
"""

import functools
import os

import numpy as np

from big_vision_sid import paths
from input_pipeline.audio import PREFIX
from input_pipeline.audio import SAMPLE_RATE
from input_pipeline import randomness
from input_pipeline.audio import augment

NOISE_PREFIX = "noise:"
NOISE_KINDS = ("white", "pink")
_NOISE_STREAM = 421
_NOISE_RMS = 0.1
_CONVERT = ("convert it, e.g. `sox IN -r 16000 -c 1 OUT.wav` or "
            "`ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`")


def noise_recording(kind: str, seed: int, seconds: float) -> np.ndarray:
  """White or pink Gaussian noise, float32 [seconds * 16000], RMS 0.1."""
  white = randomness.Draws(seed, 0, _NOISE_STREAM).normal(
      int(seconds * SAMPLE_RATE))
  noise = white if kind == "white" else augment.pink(white)
  return (noise * (_NOISE_RMS / np.sqrt(np.mean(noise ** 2)))).astype(
      np.float32)


def _read_npz(spec: str, path: str) -> tuple[np.ndarray, int]:
  with np.load(path, allow_pickle=False) as data:
    missing = {"audio", "sample_rate"} - set(data.files)
    if missing:
      raise KeyError(f"Audio source '{spec}': {path} lacks key(s) "
                     f"{sorted(missing)} (it has {sorted(data.files)}); a "
                     "recording .npz holds `audio` [T] and `sample_rate`.")
    return data["audio"], int(data["sample_rate"])


def _read_sound_file(spec: str, path: str) -> tuple[np.ndarray, int]:
  import soundfile  # pylint: disable=g-import-not-at-top
  try:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
    raise ValueError(f"Audio source '{spec}': cannot read {path} as a sound "
                     f"file: {e}") from e
  return audio, rate


def check_sample_rate(name: str, rate: int) -> None:
  """Raises a one-line error unless `rate` is the pipeline's 16 kHz."""
  if rate != SAMPLE_RATE:
    raise ValueError(f"Audio '{name}' has a sample rate of {rate} Hz; the "
                     f"audio pipeline takes {SAMPLE_RATE} Hz mono: {_CONVERT}.")


def mono(name: str, audio: np.ndarray) -> np.ndarray:
  """[T] of audio [T] or [T, 1]; a one-line error for several channels."""
  if audio.ndim == 2 and audio.shape[1] == 1:
    audio = audio[:, 0]
  if audio.ndim != 1:
    channels = audio.shape[1] if audio.ndim == 2 else audio.shape
    raise ValueError(f"Audio '{name}' has {channels} channels; the audio "
                     f"pipeline takes {SAMPLE_RATE} Hz mono: {_CONVERT}.")
  return audio


def to_float(name: str, audio: np.ndarray, rate: int) -> np.ndarray:
  """Checked mono float32 [T] in [-1, 1] of a decoded recording.

  Args:
    name: names the audio in errors.
    audio: [T] or [T, 1], int16 (full scale 32768) or float.
    rate: its sample rate in Hz.

  Raises:
    ValueError: another rate than 16 kHz, several channels, a bad dtype.
  """
  check_sample_rate(name, rate)
  audio = mono(name, audio)
  if audio.dtype == np.int16:
    return audio.astype(np.float32) / 32768.0
  if not np.issubdtype(audio.dtype, np.floating):
    raise ValueError(f"Audio '{name}' holds {audio.dtype} samples; expected "
                     "int16 or float (full scale 1.0).")
  return audio.astype(np.float32)


def noise_kind(spec: str) -> str | None:
  """'white' or 'pink' for `audio:noise:KIND`, None for a file; checked."""
  body = spec[len(PREFIX):]
  if not body.startswith(NOISE_PREFIX):
    return None
  kind = body[len(NOISE_PREFIX):]
  if kind not in NOISE_KINDS:
    raise ValueError(f"Audio source '{spec}': the noise kinds are "
                     f"{', '.join(NOISE_KINDS)}.")
  return kind


@functools.lru_cache(maxsize=2)
def _noise(kind: str, seed: int, seconds: float) -> np.ndarray:
  recording = noise_recording(kind, seed, seconds)
  recording.setflags(write=False)
  return recording


@functools.lru_cache(maxsize=2)
def _file(spec: str) -> np.ndarray:
  path = paths.expand(spec[len(PREFIX):])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Audio source '{spec}': {path} does not exist.")
  if path.lower().endswith(".npz"):
    audio, rate = _read_npz(spec, path)
  else:
    audio, rate = _read_sound_file(spec, path)
  recording = to_float(spec, audio, rate)
  recording.setflags(write=False)
  return recording


def _check_length(spec: str, seconds: float, clip_seconds: float) -> None:
  if seconds < clip_seconds:
    raise ValueError(
        f"Audio source '{spec}' is {seconds:.2f} s long, shorter than one clip"
        f" (input.audio.clip_seconds={clip_seconds:g} s).")


def check_recording(spec: str, *, clip_seconds: float,
                    noise_seconds: float) -> None:
  """Raises what `load_recording` would, without generating any noise."""
  kind = noise_kind(spec)
  seconds = noise_seconds if kind else len(_file(spec)) / SAMPLE_RATE
  _check_length(spec, seconds, clip_seconds)


def load_recording(spec: str, *, seed: int, clip_seconds: float,
                   noise_seconds: float) -> np.ndarray:
  """The recording of an `audio:` source, checked (see the module docstring).

  Decoded (or generated) once per process: it is read every step.

  Args:
    spec: `audio:PATH` or `audio:noise:KIND`.
    seed: data seed (noise recordings are a function of it).
    clip_seconds: the clip length it must be at least as long as.
    noise_seconds: the length of a noise recording.

  Returns:
    float32 [T], read-only.

  Raises:
    FileNotFoundError: the file does not exist.
    KeyError: an .npz without `audio` or `sample_rate`.
    ValueError: unreadable, not 16 kHz mono, shorter than one clip, or an
      unknown noise kind.
  """
  check_recording(spec, clip_seconds=clip_seconds, noise_seconds=noise_seconds)
  kind = noise_kind(spec)
  return _noise(kind, seed, float(noise_seconds)) if kind else _file(spec)
