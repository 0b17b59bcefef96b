"""Labelled audio clips: supervised training sources and evaluation sets.

The same spec names a training source (`input.source`) and an eval set
(`eval.dataset`, with `eval.name = 'audio_segments'`):

  audio:npz:PATH[:SPLIT]   keys `audio` [N, T] (int16, or float at full scale
                           1.0), `label` [N], optional `class_names` [C],
                           `split` [N] (SPLIT keeps the rows whose split it
                           is), `speaker` [N] and `sample_rate` (16000 if
                           absent), e.g. tts_commands' keywords.npz
  audio:folder:ROOT        ROOT/<class_name>/*.wav|flac|ogg; labels are the
                           alphabetical index of the class folder; folders
                           starting with '_' (SpeechCommands'
                           _background_noise_) are not classes
  audio:tfds:NAME:SPLIT    a TFDS dataset with `audio` and `label`, e.g.
                           `audio:tfds:speech_commands:test`, with TFDS's own
                           split slicing; prepared (downloaded) on first use

A suffix keeps a fixed subset, in labeled_data's slice syntax: `[::10]`
every 10th clip and `[~::10]` the others; `[speakers::5]` the clips of every
5th speaker (sorted speaker ids; a folder's speaker is the file name before
`_nohash_`, SpeechCommands' convention) and `[~speakers::5]` those of the
other speakers, so a validation part holds out whole speakers. E.g.
`audio:npz:$SID_SHARED_DIR/data/tts_commands/keywords.npz:train[~speakers::5]`
trains on 4/5 of the training speakers and `...:train[speakers::5]`
validates on the rest.

Clips are decoded once into memory, back to back (`LabeledClips`); they
may differ in length. Every file must be 16 kHz mono (one clear line
otherwise). TensorFlow is imported only by the tfds scheme.
"""

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
from typing import Callable, Iterator, NamedTuple

import numpy as np

from big_vision_sid import paths
from big_vision_sid.registry import Registry
from input_pipeline import labeled_data
from input_pipeline.audio import PREFIX
from input_pipeline.audio import SAMPLE_RATE
from input_pipeline.audio import SEGMENT_SAMPLES
from input_pipeline.audio import recording as recording_lib

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
_SPEAKERS = "speakers"

SCHEMES = Registry("labelled audio scheme")


@dataclasses.dataclass(frozen=True)
class Spec:
  """A parsed labelled audio spec.

  Attributes:
    text: the spec as given.
    scheme: a SCHEMES name.
    argument: what follows 'audio:scheme:', without the subset suffix.
    subset: the suffix's subset, or None for every clip.
    by_speaker: the subset selects speakers rather than clips.
  """
  text: str
  scheme: str
  argument: str
  subset: labeled_data.Subset | None
  by_speaker: bool


@dataclasses.dataclass(frozen=True)
class LabeledClips:
  """Labelled clips held in memory, back to back.

  Attributes:
    name: the spec they were loaded from.
    samples: int16 [total], every clip in order, read-only.
    starts: int64 [N + 1]: clip i is samples[starts[i]:starts[i + 1]].
    labels: int32 [N], read-only.
    class_names: names indexed by label, or None when unknown.
  """
  name: str
  samples: np.ndarray = dataclasses.field(repr=False)
  starts: np.ndarray = dataclasses.field(repr=False)
  labels: np.ndarray = dataclasses.field(repr=False)
  class_names: tuple[str, ...] | None

  @property
  def num_examples(self) -> int:
    return len(self.labels)

  def __len__(self) -> int:
    return len(self.labels)

  def clip(self, index: int) -> np.ndarray:
    """Clip `index`, int16 [T_i] (a view)."""
    return self.samples[self.starts[index]:self.starts[index + 1]]

  def num_segments(self) -> np.ndarray:
    """Non-overlapping 1-s segments per clip: floor(T_i / S), at least 1."""
    return np.maximum(np.diff(self.starts) // SEGMENT_SAMPLES, 1)

  def segment_batches(self, batch_size: int
                      ) -> Iterator[dict[str, np.ndarray]]:
    """Every clip's 1-s segments in fixed-size batches, each segment once.

    Segment k of clip i is samples [k S, (k + 1) S) of it; the remainder
    shorter than S is dropped, and a clip shorter than S is zero-padded to
    one segment. The last batch is padded with mask False.

    Yields:
      {'image': float32 [B, S, 1] (int16 values, as the step's batches),
       'clip': int32 [B] the clip of each segment, 'mask': bool [B]}.
    """
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}.")
    counts = self.num_segments()
    clip_ids = np.repeat(np.arange(len(counts)), counts)
    firsts = np.cumsum(counts) - counts
    offsets = self.starts[clip_ids] + SEGMENT_SAMPLES * (
        np.arange(len(clip_ids)) - firsts[clip_ids])
    ends = self.starts[clip_ids + 1]
    for first in range(0, len(clip_ids), batch_size):
      rows = slice(first, first + batch_size)
      image = np.zeros((batch_size, SEGMENT_SAMPLES, 1), np.float32)
      for row, (start, end) in enumerate(zip(offsets[rows], ends[rows])):
        segment = self.samples[start:min(start + SEGMENT_SAMPLES, end)]
        image[row, :len(segment), 0] = segment
      count = len(clip_ids[rows])
      yield {
          "image": image,
          "clip": np.pad(clip_ids[rows], (0, batch_size - count)).astype(
              np.int32),
          "mask": np.arange(batch_size) < count,
      }


# --- Parsing. ---


def is_labeled_spec(spec: str) -> bool:
  """Whether `spec` is `audio:SCHEME:...` with a labelled audio scheme."""
  if not spec.startswith(PREFIX):
    return False
  return spec[len(PREFIX):].partition(":")[0] in SCHEMES


def usage() -> str:
  """'audio:npz:PATH[:SPLIT], ...': the spec forms."""
  return ", ".join(PREFIX + SCHEMES.get(n).usage for n in SCHEMES.names())


def parse(spec: str) -> Spec:
  """Splits `audio:SCHEME:ARGUMENT[SUBSET]` (see the module docstring)."""
  scheme, separator, argument = spec[len(PREFIX):].partition(":")
  if not spec.startswith(PREFIX) or scheme not in SCHEMES or not argument:
    raise ValueError(f"Labelled audio spec '{spec}' must be one of {usage()}.")
  subset, by_speaker = None, False
  opening = argument.rfind("[")
  if argument.endswith("]") and opening >= 0 and scheme != "tfds":
    text = argument[opening + 1:-1]
    complement = text.startswith("~")
    body = text[1:] if complement else text
    by_speaker = body.startswith(_SPEAKERS)
    if by_speaker:
      body = body[len(_SPEAKERS):]
    subset = labeled_data.Subset.parse(("~" if complement else "") + body,
                                       spec)
    argument = argument[:opening]
  return Spec(spec, scheme, argument, subset, by_speaker)


def _kept(spec: Spec, speakers: np.ndarray | None, num: int) -> np.ndarray:
  """Clip positions kept by the subset (of clips or of speakers)."""
  if spec.subset is None:
    return np.arange(num)
  if not spec.by_speaker:
    return spec.subset.indices(num)
  if speakers is None:
    raise ValueError(f"Labelled audio spec '{spec.text}' selects speakers, "
                     "but its clips have no speaker ids.")
  distinct = np.unique(speakers)
  chosen = distinct[spec.subset.indices(len(distinct))]
  return np.flatnonzero(np.isin(speakers, chosen))


def _pack(spec: Spec, clips: list[np.ndarray] | np.ndarray,
          labels: np.ndarray, class_names: tuple[str, ...] | None
          ) -> LabeledClips:
  """LabeledClips of int16 clips (a list, or the rows of an [N, T] array)."""
  if isinstance(clips, np.ndarray):
    samples = np.ascontiguousarray(clips).reshape(-1)
    starts = np.arange(len(clips) + 1, dtype=np.int64) * clips.shape[1]
  else:
    lengths = [len(c) for c in clips]
    samples = np.concatenate(clips) if clips else np.zeros(0, np.int16)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  if not len(labels):
    raise ValueError(f"Labelled audio spec '{spec.text}' holds no clips.")
  labels = np.asarray(labels, np.int32)
  samples.setflags(write=False)
  labels.setflags(write=False)
  return LabeledClips(spec.text, samples, starts, labels, class_names)


def _as_int16(spec: str, audio: np.ndarray) -> np.ndarray:
  if audio.dtype == np.int16:
    return audio
  if np.issubdtype(audio.dtype, np.floating):
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
  if np.issubdtype(audio.dtype, np.integer) and (
      audio.size == 0 or (audio.min() >= -32768 and audio.max() <= 32767)):
    return audio.astype(np.int16)  # e.g. tfds' int64 samples.
  raise ValueError(f"Audio of '{spec}' holds {audio.dtype} samples outside "
                   "int16; expected int16 or float (full scale 1.0).")


def _existing(spec: Spec) -> str:
  path = paths.expand(spec.argument.partition(":")[0])
  if not os.path.exists(path):
    raise FileNotFoundError(f"Labelled audio spec '{spec.text}': {path} does "
                            "not exist.")
  return path


# --- Schemes. ---


class Scheme(NamedTuple):
  """A registered scheme: its usage form and `open(spec, max_examples)`."""
  usage: str
  open: Callable[[Spec, int | None], LabeledClips]


def _scheme(name: str, form: str):
  def register(opener):
    SCHEMES.register(name)(Scheme(form, opener))
    return opener
  return register


@_scheme("npz", "npz:PATH[:SPLIT]")
def _open_npz(spec: Spec, max_examples: int | None) -> LabeledClips:
  path = _existing(spec)
  split = spec.argument.partition(":")[2]
  with np.load(path, allow_pickle=False) as data:
    missing = {"audio", "label"} - set(data.files)
    if missing:
      raise KeyError(f"Labelled audio spec '{spec.text}': {path} lacks key(s) "
                     f"{sorted(missing)}; it has {sorted(data.files)}.")
    rate = int(data["sample_rate"]) if "sample_rate" in data.files else (
        SAMPLE_RATE)
    audio, labels = data["audio"], data["label"]
    optional = {k: data[k] for k in ("split", "speaker", "class_names")
                if k in data.files}
  recording_lib.check_sample_rate(spec.text, rate)
  if audio.ndim != 2 or labels.shape != audio.shape[:1]:
    raise ValueError(f"{path}: 'audio' must be [N, T] with one 'label' per "
                     f"clip, got {audio.shape} and {labels.shape}.")
  rows = np.arange(len(labels))
  if split:
    if "split" not in optional:
      raise ValueError(f"Labelled audio spec '{spec.text}' names split "
                       f"'{split}', but {path} has no 'split' key.")
    rows = np.flatnonzero(optional["split"] == split)
    if not len(rows):
      raise ValueError(f"Labelled audio spec '{spec.text}': no clips of split "
                       f"'{split}'; the splits are "
                       f"{sorted(set(optional['split'].tolist()))}.")
  speakers = optional.get("speaker")
  rows = rows[_kept(spec, None if speakers is None else speakers[rows],
                    len(rows))][:max_examples]
  class_names = (tuple(str(n) for n in optional["class_names"])
                 if "class_names" in optional else None)
  return _pack(spec, _as_int16(spec.text, audio[rows]), labels[rows],
               class_names)


def _read_file(path: str) -> np.ndarray:
  import soundfile  # pylint: disable=g-import-not-at-top
  try:
    audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
    raise ValueError(f"Cannot read {path} as a sound file: {e}") from e
  recording_lib.check_sample_rate(path, rate)
  return recording_lib.mono(path, audio)


def _speaker(file_name: str) -> str:
  stem = pathlib.Path(file_name).stem
  return stem.split("_nohash_")[0]


@_scheme("folder", "folder:ROOT")
def _open_folder(spec: Spec, max_examples: int | None) -> LabeledClips:
  root = pathlib.Path(_existing(spec))
  class_files = {
      d.name: sorted(str(f) for f in d.iterdir()
                     if f.name.lower().endswith(AUDIO_EXTENSIONS))
      for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith("_")}
  class_names = tuple(n for n, files in class_files.items() if files)
  if not class_names:
    raise FileNotFoundError(
        f"Labelled audio spec '{spec.text}': no {'/'.join(AUDIO_EXTENSIONS)} "
        f"files in class folders of {root} (expected <root>/<class>/<file>).")
  files = [f for n in class_names for f in class_files[n]]
  labels = np.asarray([i for i, n in enumerate(class_names)
                       for _ in class_files[n]], np.int32)
  speakers = np.asarray([_speaker(f) for f in files])
  keep = _kept(spec, speakers, len(files))[:max_examples]
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    clips = list(pool.map(_read_file, [files[i] for i in keep]))
  return _pack(spec, clips, labels[keep], class_names)


@_scheme("tfds", "tfds:NAME:SPLIT")
def _open_tfds(spec: Spec, max_examples: int | None) -> LabeledClips:
  name, _, split = spec.argument.partition(":")
  if not name or not split:
    raise ValueError(f"Labelled audio spec '{spec.text}' must be "
                     "'audio:tfds:NAME:SPLIT', e.g. "
                     "'audio:tfds:speech_commands:test'.")
  builder = labeled_data.prepared_tfds_builder(name)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rate = getattr(builder.info.features["audio"], "sample_rate", SAMPLE_RATE)
  recording_lib.check_sample_rate(spec.text, rate)
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  if max_examples:
    dataset = dataset.take(max_examples)
  clips, labels = [], []
  for example in tfds.as_numpy(dataset):
    clips.append(_as_int16(spec.text, np.asarray(example["audio"]).reshape(-1)))
    labels.append(int(example["label"]))
  names = getattr(builder.info.features["label"], "names", None)
  return _pack(spec, clips, np.asarray(labels), tuple(names) if names else None)


@functools.lru_cache(maxsize=4)
def load(spec: str, max_examples: int | None = None) -> LabeledClips:
  """The labelled clips of `spec` (see the module docstring), once per process.

  Args:
    spec: `audio:npz:...`, `audio:folder:...` or `audio:tfds:...`.
    max_examples: keep only the first clips (after the subset).

  Returns:
    The clips.

  Raises:
    FileNotFoundError: a missing file or folder, a folder without sound
      files, or a TFDS dataset that cannot be prepared.
    KeyError: an .npz without `audio` or `label`.
    ValueError: a malformed spec or file, or audio that is not 16 kHz mono.
  """
  if max_examples is not None and max_examples <= 0:
    raise ValueError(f"max_examples must be positive, got {max_examples}.")
  parsed = parse(spec)
  return SCHEMES.get(parsed.scheme).open(parsed, max_examples)
