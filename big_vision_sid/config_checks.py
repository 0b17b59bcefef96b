"""Every config value checked before anything runs, in one line per problem.

`check_config` looks at each numeric field's range and each name against its
registry (model, loss, mixing, optimizer, ...) before the trainer loads a
teacher, renders a patch or compiles a step, so a typo costs a second, not a
compilation. All problems are reported together in ONE `ConfigError` line
naming each field, its bad value and what is allowed, e.g.

  ConfigError: input.batch_size=0 is out of range: must be an integer >= 1.

Fields that a config does not have are skipped (older configs, benchmarks).
Settings that are legal but probably unintended come back as warnings.
"""

import dataclasses
import math
from typing import Any, Callable, Iterable

import ml_collections

from big_vision_sid import evaluators
from big_vision_sid import losses
from big_vision_sid import mixing
from big_vision_sid import models
from big_vision_sid import optim
from big_vision_sid import targets
from big_vision_sid import teachers
from input_pipeline import dataset_source
from input_pipeline import selection
from input_pipeline.audio import augment as audio_augment
from input_pipeline.audio import samples as audio_samples
from input_pipeline.image import augment
from input_pipeline.image import renderer
from input_pipeline.video import labeled as video_labeled
from input_pipeline.video import samples as video_samples

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
_MISSING = object()


class ConfigError(ValueError):
  """One or more config values are invalid (all named in one line)."""


Config = ml_collections.ConfigDict
Applies = Callable[[Config], bool]


def _always(config: Config) -> bool:
  del config
  return True


@dataclasses.dataclass(frozen=True)
class Rule:
  """`field` must satisfy `ok`; `allowed` says what is allowed, for the message."""
  field: str
  ok: Callable[[Any], bool]
  allowed: str
  applies: Applies = _always


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def integer(low: int | None = None) -> tuple[Callable[[Any], bool], str]:
  """An integer >= `low` (any integer when None)."""
  if low is None:
    return _is_int, "an integer"
  return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def number(low: float, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
  """A finite number in the interval [low, high] (ends open when asked)."""

  def ok(v: Any) -> bool:
    return (_is_number(v) and (v > low if low_open else v >= low)
            and (v < high if high_open else v <= high))
  left = "(" if low_open else "["
  right = ")" if high_open or high == math.inf else "]"
  return ok, f"a number in {left}{low:g}, {high:g}{right}"


def optional(check: tuple[Callable[[Any], bool], str]
             ) -> tuple[Callable[[Any], bool], str]:
  ok, allowed = check
  return (lambda v: v is None or ok(v)), f"None or {allowed}"


def pair(low: float, high: float = math.inf) -> tuple[Callable[[Any], bool], str]:
  """(a, b) with low < a <= b <= high."""

  def ok(v: Any) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) == 2
            and all(_is_number(x) for x in v) and low < v[0] <= v[1] <= high)
  upper = "" if high == math.inf else f" <= {high:g}"
  return ok, f"a pair (a, b) with {low:g} < a <= b{upper}"


def one_of(names: Iterable[str], kind: str) -> tuple[Callable[[Any], bool], str]:
  names = tuple(names)
  return (lambda v: v in names), f"a known {kind} ({', '.join(names)})"


def _fractions(v: Any) -> bool:
  return (isinstance(v, (tuple, list)) and all(_is_number(x) and 0 <= x <= 1 for x in v)
          and list(v) == sorted(v))


def _get(config: Config, field: str) -> Any:
  value: Any = config
  for key in field.split("."):
    if not isinstance(value, (Config, dict)) or key not in value:
      return _MISSING
    value = value[key]
  return value


def _field_is(field: str, *values: Any) -> Applies:
  return lambda config: _get(config, field) in values


def _field_is_not(field: str, *values: Any) -> Applies:
  return lambda config: _get(config, field) not in values


def _rule(field: str, check: tuple[Callable[[Any], bool], str],
          applies: Applies = _always) -> Rule:
  return Rule(field, check[0], check[1], applies)


def _is_audio(config: Config) -> bool:
  source = _get(config, "input.source")
  return isinstance(source, str) and audio_samples.is_audio_source(source)


def _channel_values(positive: bool) -> tuple[Callable[[Any], bool], str]:
  """1 or 3 finite numbers (> 0 when `positive`): one per input channel."""

  def ok(v: Any) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) in (1, 3)
            and all(_is_number(x) and (x > 0 or not positive) for x in v))
  return ok, (f"1 or 3 {'numbers > 0' if positive else 'finite numbers'} "
              "(one per channel: RGB, or one for audio)")


def _augmentation_names(v: Any) -> bool:
  return (isinstance(v, (tuple, list)) and len(v) > 0
          and all(name in audio_augment.AUGMENTATIONS for name in v))


def _is_video(config: Config) -> bool:
  source = _get(config, "input.source")
  return isinstance(source, str) and video_samples.is_video_source(source)


_BOOL = (lambda v: isinstance(v, bool), "True or False")


_MIXES = _field_is_not("mixing.mode", "none")
_SELECTS = _field_is_not("input.selection", "none")
_HAS_TEACHER = _field_is_not("target", "labels")
_TEACHER_FORMATS = (*teachers.CONVERTERS.names(), teachers.FLAX_FORMAT,
                    teachers.RANDOM_FORMAT)


def rules() -> list[Rule]:
  """Every checked field, in the order problems are reported."""
  return [
      _rule("seed", integer(0)),
      _rule("total_steps", optional(integer(1))),
      _rule("total_epochs", optional(number(0, low_open=True))),
      _rule("log_every_steps", integer(1)),
      _rule("compute_dtype", one_of(COMPUTE_DTYPES, "compute dtype")),
      _rule("target", one_of(targets.TARGETS.names(), "target")),
      _rule("student.name", one_of(models.MODELS.names(), "model")),
      _rule("student.num_classes", integer(1)),
      _rule("teacher.name", one_of(models.MODELS.names(), "model"), _HAS_TEACHER),
      _rule("teacher.format", one_of(_TEACHER_FORMATS, "teacher format"), _HAS_TEACHER),
      _rule("teacher.num_classes", integer(1), _HAS_TEACHER),
      _rule("teacher.mean", _channel_values(positive=False)),
      _rule("teacher.std", _channel_values(positive=True)),
      _rule("input.patch_size", integer(1)),
      _rule("input.num_patches", integer(0)),
      _rule("input.backend", one_of(renderer.BACKENDS.names(), "input backend")),
      _rule("input.batch_size", integer(1)),
      _rule("input.initcrop", number(0, 1, low_open=True)),
      _rule("input.rrc_scale", pair(0, 1)),
      _rule("input.rrc_ratio", pair(0)),
      _rule("input.degrees", number(0, 180)),
      _rule("input.shear", number(0, 90, high_open=True)),
      _rule("input.jitter.brightness", number(0, 1)),
      _rule("input.jitter.contrast", number(0, 1)),
      _rule("input.jitter.saturation", number(0, 1)),
      _rule("input.jitter.hue", number(0, 0.5)),
      _rule("input.jitter.p", number(0, 1)),
      _rule("input.train_augment", one_of(augment.AUGMENTATIONS, "train augmentation")),
      _rule("input.pad", integer(0)),
      _rule("input.rrc_flip_scale", pair(0, 1)),
      _rule("input.selection", one_of(("none", *selection.SELECTORS.names()),
                                      "patch selection")),
      _rule("input.selection_pool", integer(1), _SELECTS),
      _rule("input.selection_clusters", integer(1), _field_is("input.selection", "kmeans")),
      _rule("input.selection_temperature", number(0, low_open=True),
            _field_is("input.selection", "entropy")),
      _rule("input.num_parallel_calls", (lambda v: _is_int(v) and (v == -1 or v >= 1),
                                         "-1 (autotune) or an integer >= 1")),
      _rule("input.prefetch", integer(0)),
      _rule("input.audio.clip_seconds", number(1.0), _is_audio),
      _rule("input.audio.augment_p", number(0, 1), _is_audio),
      _rule("input.audio.augmentations", (
          _augmentation_names, "a non-empty list of audio augmentations "
          f"({', '.join(audio_augment.NAMES)})"), _is_audio),
      _rule("input.audio.pad_seconds", number(0), _is_audio),
      _rule("input.audio.noise_seconds", number(1.0), _is_audio),
      _rule("input.video.frames", integer(1), _is_video),
      _rule("input.video.frame_size", integer(1), _is_video),
      _rule("input.video.clip_frames", integer(1), _is_video),
      _rule("input.video.frame_stride", integer(1), _is_video),
      _rule("input.video.short_side", pair(0), _is_video),
      _rule("input.video.hflip", _BOOL, _is_video),
      _rule("input.video.augmix", _BOOL, _is_video),
      _rule("input.video.augmix_magnitude", (
          lambda v: _is_int(v) and 1 <= v <= 10, "an integer in [1, 10]"),
            _is_video),
      _rule("input.video.augmix_width", integer(1), _is_video),
      _rule("input.video.augmix_depth", (
          lambda v: _is_int(v) and (v == -1 or v >= 1),
          "-1 (1 to 3 ops at random) or an integer >= 1"), _is_video),
      _rule("input.video.augmix_alpha", number(0, low_open=True), _is_video),
      _rule("mixing.mode", one_of(mixing.MIXERS.names(), "mixing")),
      _rule("mixing.alpha", number(0, low_open=True), _MIXES),
      _rule("mixing.partner", one_of(mixing.PARTNERS.names(), "mixing partner"), _MIXES),
      _rule("distill.loss", one_of(losses.LOSSES.names(), "distillation loss")),
      _rule("distill.temperature", number(0, low_open=True)),
      _rule("distill.topk", integer(1)),
      _rule("optim.name", one_of(optim.OPTIMIZERS.names(), "optimizer")),
      # 0 is allowed: one step at lr 0 evaluates a compressed clone without
      # fine-tuning (configs/cifar10_r56_compress.py).
      _rule("optim.lr", number(0)),
      _rule("optim.weight_decay", number(0)),
      _rule("optim.momentum", number(0, 1, high_open=True)),
      _rule("optim.b1", number(0, 1, high_open=True)),
      _rule("optim.b2", number(0, 1, high_open=True)),
      _rule("optim.schedule", one_of(optim.SCHEDULES.names(), "lr schedule")),
      _rule("optim.warmup_steps", integer(0)),
      _rule("optim.end_lr_factor", number(0, 1)),
      _rule("optim.step_boundaries", (_fractions, "ascending fractions in [0, 1]")),
      _rule("optim.step_decay", number(0, low_open=True)),
      _rule("optim.grad_clip_norm", optional(number(0))),
      _rule("eval.name", one_of(evaluators.EVALUATORS.names(), "evaluator")),
      _rule("eval.batch_size", integer(1)),
      _rule("eval.image_size", integer(1)),
      _rule("eval.every_steps", integer(0)),
      _rule("eval.max_examples", optional(integer(0))),
      _rule("checkpoint.every_steps", integer(0)),
      _rule("checkpoint.every_seconds", number(0)),
      _rule("checkpoint.keep", optional(integer(1))),
      _rule("checkpoint.async_save", (lambda v: isinstance(v, bool), "True or False")),
  ]


def _eval_pairing_problems(config: Config, evaluator: str, prefix: str,
                           kind: str) -> list[str]:
  """`kind` eval sets ('PREFIX...') and the `evaluator` go together only."""
  eval_set = _get(config, "eval.dataset")
  kind_eval = isinstance(eval_set, str) and eval_set.startswith(prefix)
  if (_get(config, "eval.name") == evaluator) != kind_eval and (
      eval_set is not _MISSING):
    return [f"eval.name={_show(_get(config, 'eval.name'))} does not fit "
            f"eval.dataset={_show(eval_set)}: {kind} eval sets ('{prefix}...') "
            f"take eval.name='{evaluator}', and only they do"]
  return []


def _image_only_problems(config: Config, kind: str) -> list[str]:
  """Patch selection and int8 calibration need image patches."""
  problems = []
  if _get(config, "input.selection") not in ("none", _MISSING):
    problems.append(f"input.selection={_show(_get(config, 'input.selection'))}"
                    f" is image-only: {kind} sources need 'none'")
  if _get(config, "compress.quantize") not in ("none", _MISSING):
    problems.append(f"compress.quantize calibrates on image patches: {kind} "
                    "sources need 'none'")
  return problems


def _audio_problems(config: Config) -> list[str]:
  """Settings that audio sources (clips, not image patches) do not support."""
  pairing = _eval_pairing_problems(config, "audio_segments", "audio:", "audio")
  if pairing:
    return pairing
  if not _is_audio(config):
    return []
  problems = [f"{field}={_get(config, field)} must hold 1 value for audio "
              "(waveforms have one channel)" for field in ("teacher.mean", "teacher.std")
              if isinstance(_get(config, field), (tuple, list))
              and len(_get(config, field)) != 1]
  return problems + _image_only_problems(config, "audio")


def _video_problems(config: Config) -> list[str]:
  """Video eval sets and settings that fake-clip sources do not support."""
  pairing = _eval_pairing_problems(config, "video_clips", video_labeled.PREFIX,
                                   "video")
  if pairing:
    return pairing
  if not _is_video(config):
    return []
  source = _get(config, "input.source")
  if video_labeled.is_labeled_spec(source):
    return [f"input.source={_show(source)} is a labelled video set, which is "
            "for evaluation: train on fake clips of an image, "
            f"'{video_labeled.PREFIX}IMAGE'"]
  problems = []
  frames, clip_frames, stride = (_get(config, f"input.video.{k}") for k in (
      "frames", "clip_frames", "frame_stride"))
  if all(_is_int(v) for v in (frames, clip_frames, stride)) and (
      (clip_frames - 1) * stride + 1 > frames):
    problems.append(f"input.video.clip_frames={clip_frames} every "
                    f"frame_stride={stride} spans {(clip_frames - 1) * stride + 1}"
                    f" frames, more than the fake clips' frames={frames}")
  patch_size = _get(config, "input.patch_size")
  short_side = _get(config, "input.video.short_side")
  if (_is_int(patch_size) and isinstance(short_side, (tuple, list)) and short_side
      and _is_number(short_side[0]) and short_side[0] < patch_size):
    problems.append(f"input.video.short_side={tuple(short_side)} is below "
                    f"input.patch_size={patch_size}: the crop would not fit")
  return problems + _image_only_problems(config, "video")


def _cross_field_problems(config: Config) -> list[str]:
  """Problems of the step budget that no single field shows."""
  total_steps, total_epochs = _get(config, "total_steps"), _get(config, "total_epochs")
  if total_steps not in (None, _MISSING):
    return []
  if total_epochs in (None, _MISSING):
    return ["neither total_steps nor total_epochs is set: set one"]
  source = _get(config, "input.source")
  if isinstance(source, str) and (
      dataset_source.is_dataset_source(source) or
      (audio_samples.is_audio_source(source) and
       audio_samples.has_labels(config.input))):
    return []  # A labelled dataset's epoch is the dataset.
  num_patches, batch_size = _get(config, "input.num_patches"), _get(config, "input.batch_size")
  if num_patches == 0:
    return [f"total_epochs={total_epochs} needs a fixed patch set "
            "(input.num_patches > 0): set total_steps for an endless stream"]
  if (_is_int(num_patches) and _is_int(batch_size) and batch_size >= 1
      and 0 < num_patches < batch_size):
    return [f"input.num_patches={num_patches} is smaller than "
            f"input.batch_size={batch_size}: an epoch holds no full batch, so "
            "total_epochs cannot count steps"]
  return []


def _warnings(config: Config) -> list[str]:
  warnings = []
  total_steps = _get(config, "total_steps")
  warmup = _get(config, "optim.warmup_steps")
  if _is_int(total_steps) and _is_int(warmup) and 0 < total_steps <= warmup:
    warnings.append(f"optim.warmup_steps={warmup} >= total_steps={total_steps}"
                    ": the learning rate never reaches optim.lr")
  frames = _get(config, "input.video.clip_frames")
  eval_set = _get(config, "eval.dataset")
  if (_is_video(config) and frames != video_labeled.CLIP_FRAMES
      and isinstance(eval_set, str) and video_labeled.is_labeled_spec(eval_set)):
    warnings.append(f"input.video.clip_frames={frames}, but video eval clips "
                    f"have {video_labeled.CLIP_FRAMES} frames")
  return warnings


def _show(value: Any) -> str:
  return repr(value) if isinstance(value, str) else str(value)


def check_config(config: Config) -> list[str]:
  """Checks every field of a trainer config (see the module docstring).

  Args:
    config: the experiment config (configs/common.py's fields).

  Returns:
    Warnings about legal but probably unintended settings.

  Raises:
    ConfigError: one line naming every invalid field, its value and the
      allowed range or names.
  """
  problems = []
  for rule in rules():
    value = _get(config, rule.field)
    if value is _MISSING or not rule.applies(config) or rule.ok(value):
      continue
    kind = "is out of range" if (
        _is_number(value) or value is None or isinstance(value, (tuple, list))
    ) else "is not valid"
    problems.append(f"{rule.field}={_show(value)} {kind}: must be {rule.allowed}")
  problems += (_cross_field_problems(config) + _audio_problems(config)
               + _video_problems(config))
  if problems:
    raise ConfigError("; ".join(problems) + ".")
  return _warnings(config)
