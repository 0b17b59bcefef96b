"""What every analysis part shares: the networks, the data and the outputs.

A `Context` holds one finished run (`workdir.load_run`) and computes lazily,
once, what the parts ask for: N training patches exactly as the run's input
pipeline produced them (`train_data.make_train_iterator` from step 0, the
distillation-time flip/crop included, optionally mixed with the run's own
CutMix/MixUp draw of each step), the real test images of its eval set, and
each network's logits and penultimate features on both. The networks are the
student (as the trainer evaluated it, fake-quantised for an int8 run) and the
teacher (rebuilt from `config.teacher` around the run's loaded variables);
`capture_layers` reads a network's block outputs for CKA and neuron
visualisation by intercepting its direct submodules, so no model needs code
for it. A part returns a `Section`: its figures (PNG files in the output
folder, each with a one-line caption) and the numbers behind them.
"""

import dataclasses
import functools
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from big_vision_sid import features as features_lib
from big_vision_sid import mixing
from big_vision_sid import models
from big_vision_sid import pool_scoring
from big_vision_sid import train_step
from big_vision_sid import workdir as workdir_lib
from input_pipeline import eval_data
from input_pipeline import selection
from input_pipeline import train_data

PyTree = Any
# The CKA / neuron name of a network's output.
LOGITS = "logits"
PATCHES, TEST = "patches", "test"
_DPI = 110


@dataclasses.dataclass(frozen=True)
class Options:
  """What the command line chose (see `big_vision_sid.analyze`'s flags)."""
  dataset: str | None = None
  num_patches: int = 5000
  max_test_images: int = 0
  mixed_patches: bool = False
  batch_size: int = 256
  temperature: float | None = None
  seed: int = 0
  compare_workdir: str | None = None
  compare_teacher: str | None = None
  cka_batch_size: int = 256
  cka_full_batch_max: int = 2048
  tsne_perplexity: float = 30.0
  tsne_thumbnails: int = 12
  neuron_steps: int = 256
  neuron_classes: int = 10
  neuron_channels: int = 2
  gallery_size: int = 48

  def check(self) -> None:
    """Raises ValueError naming every out-of-range count."""
    minimum = {"num_patches": 1, "max_test_images": 0, "batch_size": 1,
               "cka_batch_size": 4, "cka_full_batch_max": 0,
               "tsne_thumbnails": 0, "neuron_steps": 1, "neuron_classes": 0,
               "neuron_channels": 0, "gallery_size": 1}
    bad = [f"--{name}={getattr(self, name)} must be >= {low}"
           for name, low in minimum.items() if getattr(self, name) < low]
    if self.temperature is not None and not self.temperature > 0:
      bad.append(f"--temperature={self.temperature} must be > 0")
    if not self.tsne_perplexity > 0:
      bad.append(f"--tsne_perplexity={self.tsne_perplexity} must be > 0")
    if self.compare_workdir and self.compare_teacher:
      bad.append("--compare_workdir and --compare_teacher exclude each other")
    if bad:
      raise ValueError("; ".join(bad) + ".")


@dataclasses.dataclass(frozen=True)
class Network:
  """A classifier with its variables and input normalisation.

  Attributes:
    name: its role, e.g. "student", "teacher".
    label: what figures call it, e.g. "student cifar_resnet20 @1400".
    module: the flax module (for `features.logits_and_features`).
    apply: `module.apply` or a replacement with its signature (int8 runs).
    variables: its variables.
    mean: per-channel mean of its [0, 1] inputs.
    std: per-channel std.
  """
  name: str
  label: str
  module: nn.Module
  apply: Callable[..., Any]
  variables: PyTree
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def normalize(self, images: jax.Array) -> jax.Array:
    return train_step.normalize(images, self.mean, self.std)


@dataclasses.dataclass(frozen=True)
class FigureFile:
  file: str
  caption: str


@dataclasses.dataclass
class Section:
  """What one part produced: figures with captions and the numbers behind them."""
  title: str
  figures: list[FigureFile]
  numbers: dict[str, Any]


def student_network(run: workdir_lib.FinishedRun) -> Network:
  """The run's student as the trainer evaluated it."""
  return Network(
      name="student", label=f"student {run.config.student.name} @{run.step}",
      module=run.student, apply=run.student_apply, variables=run.variables,
      mean=run.target.mean, std=run.target.std)


def teacher_network(run: workdir_lib.FinishedRun) -> Network | None:
  """The run's teacher, or None when it distilled no network (supervised)."""
  if run.target.predict is None:
    return None
  teacher = run.config.teacher
  module = models.build_model(teacher.name, teacher.num_classes,
                              dtype=jnp.dtype(run.config.compute_dtype))
  return Network(name="teacher", label=f"teacher {teacher.name}",
                 module=module, apply=module.apply,
                 variables=run.target.variables, mean=run.target.mean,
                 std=run.target.std)


def layer_names(net: Network, image_shape: tuple[int, ...]) -> list[str]:
  """The network's blocks in call order, then `LOGITS`.

  A block is a direct submodule of the model that calls submodules of its
  own (a residual block, an encoder block); a model without such blocks
  (VGG) offers every direct submodule but its last (the classifier).
  """
  calls: list[tuple[str, ...]] = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.scope is not None:
      path = tuple(context.module.scope.path)
      if path and path not in calls:
        calls.append(path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: net.apply(
        net.variables, jnp.zeros((1, *image_shape), jnp.float32), train=False))
  children = [path[0] for path in calls if len(path) == 1]
  blocks = [name for name in children
            if any(len(path) > 1 and path[0] == name for path in calls)]
  return (blocks or children[:-1]) + [LOGITS]


def capture_layers(net: Network, variables: PyTree, x: jax.Array,
                   names: list[str]) -> list[jax.Array]:
  """Outputs of the direct submodules `names` (and `LOGITS`) on normalised x.

  Traceable (inside jit or grad); the outputs follow the order of `names`.
  """
  wanted = set(names)
  outputs: dict[str, jax.Array] = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    scope = context.module.scope
    if (context.method_name == "__call__" and scope is not None
        and len(scope.path) == 1 and scope.path[0] in wanted):
      outputs[scope.path[0]] = out
    return out

  with nn.intercept_methods(record):
    outputs[LOGITS] = net.apply(variables, x, train=False)
  missing = [name for name in names if name not in outputs]
  if missing:
    raise ValueError(f"{net.label} has no submodule output(s) {missing}.")
  return [outputs[name].astype(jnp.float32) for name in names]


def map_batches(fn: Callable[[jax.Array], PyTree], images: np.ndarray,
                batch_size: int) -> PyTree:
  """`fn` over `images` in batches of one shape (the last one zero-padded).

  Returns the outputs concatenated over the batches as numpy arrays.
  """
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    count = len(chunk)
    if count < batch_size:
      chunk = np.concatenate(
          [chunk, np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)])
    result = jax.device_get(fn(jnp.asarray(chunk)))
    outputs.append(jax.tree.map(lambda a, n=count: np.asarray(a)[:n], result))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def predict_logits(net: Network, images: np.ndarray, batch_size: int
                   ) -> np.ndarray:
  """float32 [N, C] logits of `net` on float images [N, H, W, 3] in [0, 1]."""
  forward = jax.jit(lambda v, x: net.apply(v, net.normalize(x), train=False))
  return map_batches(functools.partial(forward, net.variables), images,
                     batch_size).astype(np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  z = np.asarray(logits, np.float64) / temperature
  z -= z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """float [0, 1] -> uint8 (for thumbnails)."""
  return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


class Context:
  """One run, the analysis options and the output folder; data on demand."""

  def __init__(self, run: workdir_lib.FinishedRun, options: Options,
               out_dir: str):
    self.run = run
    self.options = options
    self.out_dir = out_dir
    self.student = student_network(run)
    self.teacher = teacher_network(run)
    self._cache: dict[tuple[str, ...], Any] = {}

  @property
  def config(self) -> Any:
    return self.run.config

  @property
  def networks(self) -> list[Network]:
    """The student, then the teacher when there is one."""
    return [self.student] + ([self.teacher] if self.teacher else [])

  @property
  def temperature(self) -> float:
    return float(self.options.temperature or self.config.distill.temperature)

  @functools.cached_property
  def eval_set(self) -> eval_data.EvalSet:
    spec = self.options.dataset or self.config.eval.dataset
    return eval_data.load_eval_set(
        spec, image_size=self.config.eval.image_size,
        max_examples=self.options.max_test_images or None)

  @functools.cached_property
  def test(self) -> tuple[np.ndarray, np.ndarray]:
    """The eval set's images (float32 [N, S, S, 3] in [0, 1]) and labels."""
    images, labels = [], []
    for batch in self.eval_set.batches(self.options.batch_size):
      images.append(batch["image"][batch["mask"]])
      labels.append(batch["label"][batch["mask"]])
    logging.info("Analysis: %d test images of %s.", self.eval_set.num_examples,
                 self.eval_set.name)
    return np.concatenate(images), np.concatenate(labels)

  @functools.cached_property
  def class_names(self) -> list[str]:
    names = self.eval_set.class_names
    count = self.config.student.num_classes
    return list(names) if names and len(names) == count else [
        str(c) for c in range(count)]

  @functools.cached_property
  def patches(self) -> np.ndarray:
    """The first `num_patches` training samples, float32 [N, P, P, 3] in [0, 1]."""
    config, count = self.config, self.options.num_patches
    pool_weights = None
    if selection.is_enabled(config.input):
      # The trainer cached these scores in the workdir; read back, not redone.
      pool_weights, _ = pool_scoring.pool_weights(config, self.run.target,
                                                  self.run.workdir)
    batches = train_data.make_train_iterator(
        config.input, seed=config.seed, pool_weights=pool_weights)
    mix = jax.jit(lambda step, x: mixing.mix_images(
        jax.random.fold_in(self.run.state.rng, step), x, config.mixing.mode,
        config.mixing.alpha, config.mixing.partner))
    chunks, total = [], 0
    for step, batch in enumerate(batches):
      images = train_step.to_unit_float(jnp.asarray(batch["image"]))
      if self.options.mixed_patches:  # The step's own draw (train_step).
        images = mix(jnp.asarray(step, jnp.int32), images)
      chunks.append(np.asarray(images))
      total += len(images)
      if total >= count:
        break
    logging.info("Analysis: %d training patches of %s (%s).", count,
                 config.input.source,
                 "mixed as trained" if self.options.mixed_patches else
                 "before mixing")
    return np.concatenate(chunks)[:count]

  def images(self, split: str) -> np.ndarray:
    return self.patches if split == PATCHES else self.test[0]

  def logits(self, net: Network, split: str) -> np.ndarray:
    """float32 [N, C] logits of `net` on `split` (PATCHES or TEST)."""
    key = ("logits", net.name, split)
    if key not in self._cache:
      self._cache[key] = predict_logits(net, self.images(split),
                                        self.options.batch_size)
    return self._cache[key]

  def features(self, net: Network, split: str) -> np.ndarray:
    """float32 [N, D] penultimate features of `net` on `split`."""
    key = ("features", net.name, split)
    if key not in self._cache:
      forward = jax.jit(lambda v, x: features_lib.logits_and_features(
          net.module, v, net.normalize(x))[1])
      self._cache[key] = map_batches(
          functools.partial(forward, net.variables), self.images(split),
          self.options.batch_size)
    return self._cache[key]

  def save_figure(self, figure: Figure, name: str, caption: str) -> FigureFile:
    """Writes `figure` as `<out_dir>/<name>` (PNG, atomically)."""
    path = workdir_lib.as_path(self.out_dir) / name
    workdir_lib.atomic_write(
        str(path), lambda f: figure.savefig(f, format="png", dpi=_DPI))
    return FigureFile(name, caption)

