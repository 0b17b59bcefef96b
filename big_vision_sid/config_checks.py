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
from input_pipeline.image import augment
from input_pipeline.image import renderer

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
      _rule("teacher.mean", (lambda v: isinstance(v, (tuple, list)) and len(v) == 3
                             and all(_is_number(x) for x in v),
                             "3 finite numbers (one per RGB channel)")),
      _rule("teacher.std", (lambda v: isinstance(v, (tuple, list)) and len(v) == 3
                            and all(_is_number(x) and x > 0 for x in v),
                            "3 numbers > 0 (one per RGB channel)")),
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


def _cross_field_problems(config: Config) -> list[str]:
  """Problems of the step budget that no single field shows."""
  total_steps, total_epochs = _get(config, "total_steps"), _get(config, "total_epochs")
  if total_steps not in (None, _MISSING):
    return []
  if total_epochs in (None, _MISSING):
    return ["neither total_steps nor total_epochs is set: set one"]
  source = _get(config, "input.source")
  if isinstance(source, str) and dataset_source.is_dataset_source(source):
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
  total_steps = _get(config, "total_steps")
  warmup = _get(config, "optim.warmup_steps")
  if _is_int(total_steps) and _is_int(warmup) and 0 < total_steps <= warmup:
    return [f"optim.warmup_steps={warmup} >= total_steps={total_steps}: the "
            "learning rate never reaches optim.lr"]
  return []


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
  problems += _cross_field_problems(config)
  if problems:
    raise ConfigError("; ".join(problems) + ".")
  return _warnings(config)
