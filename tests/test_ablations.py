"""Tests of the ablation sweeps and the supervised-teacher config."""

import itertools
import os
import pathlib

import numpy as np
from PIL import Image
import pytest

from big_vision_sid import losses
from big_vision_sid import mixing
from big_vision_sid import models
from big_vision_sid import optim
from big_vision_sid import paths
from big_vision_sid import sweep
from configs import cifar10_ablations
from configs import cifar10_supervised_teacher
from input_pipeline.image import augment
from input_pipeline import dataset_source
from input_pipeline.image import sources
from input_pipeline import train_data

CONFIG_FILE = (pathlib.Path(__file__).resolve().parent.parent / "configs" /
               "cifar10_ablations.py")
CIFAR10_TRAIN_SIZE = 50_000


def _apply(config, overrides):
  """Sets dotted keys like `--config.a.b=v`, failing on unknown keys."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      assert part in node, f"unknown config key {key!r}"
      node = node[part]
    assert leaf in node, f"unknown config key {key!r}"
    node[leaf] = value
  return config


def _check_source(spec, patch_size, initcrop):
  """The source loads (or is a recognised spec whose data is absent here)."""
  if sources.is_noise_input(spec):
    return
  if dataset_source.is_dataset_source(spec):
    path = paths.expand(spec.split(":", 2)[2])
    assert path.endswith(".tar.gz") and spec.startswith("dataset:tar:")
    if not os.path.exists(path):
      pytest.skip(f"{path} is not available.")
    return
  if "$SID_SHARED_DIR" in spec and not os.path.exists(paths.expand(spec)):
    pytest.skip(f"{paths.expand(spec)} is not available.")
  image = sources.load_source_image(spec)
  sources.check_image_size(image.shape[:2], patch_size, initcrop)


def _check_distillation_config(config):
  assert config.distill.loss in losses.LOSSES.names()
  assert config.mixing.mode in mixing.MIXERS.names()
  assert config.input.train_augment in augment.AUGMENTATIONS
  assert config.student.name in models.MODELS.names()
  assert config.teacher.name in models.MODELS.names()
  assert config.input.num_patches >= 0
  assert optim.resolve_total_steps(config.total_steps, config.total_epochs,
                                   None) == config.total_steps > 0
  _check_source(config.input.source, config.input.patch_size,
                config.input.initcrop)


AXIS_CELLS = [(axis, cell) for axis in cifar10_ablations.AXES
              for cell in cifar10_ablations.get_sweep(axis)]


@pytest.mark.parametrize(
    "axis,cell", AXIS_CELLS, ids=[f"{a}-{c['name']}" for a, c in AXIS_CELLS])
def test_every_cell_builds_a_valid_config(axis, cell):
  overrides = {k: v for k, v in cell.items() if k != "name"}
  config = _apply(cifar10_ablations.get_config(axis), overrides)
  _check_distillation_config(config)
  for value in overrides.values():
    # What the sweep passes on the command line parses back to the value.
    assert sweep.parse_value(sweep.format_value(value)) == value


def test_axes_hold_the_paper_settings():
  def values(axis, key):
    return [cell[key] for cell in cifar10_ablations.get_sweep(axis)]
  assert values("source", "input.source")[3:] == [
      "noise:uniform_image", "skimage:astronaut"]
  assert [os.path.basename(s) for s in values("source", "input.source")[:3]
          ] == ["city.jpg", "animals.png", "bridge.png"]
  assert values("loss", "distill.loss") == ["kl", "l1", "l2", "topk_kl",
                                            "hard"]
  augment_axis = cifar10_ablations.get_sweep("augment")
  assert [(c["input.train_augment"], c["mixing.mode"]) for c in augment_axis
          ] == [("none", "none"), ("flip_crop", "none"),
                ("flip_crop", "cutmix"), ("flip_crop", "mixup")]
  assert values("dataset_size", "input.num_patches") == [1000, 10000, 50000,
                                                         0]
  assert values("noise_inputs", "input.source")[:2] == ["noise:uniform",
                                                        "noise:normal"]
  assert values("real_data", "input.source")[0] == (
      "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz")
  grid = cifar10_ablations.get_sweep("grid")
  source_axis = cifar10_ablations.get_sweep("source")
  assert [c["name"] for c in grid] == ["city", "animals", "noise_image"]
  assert all(cell in source_axis for cell in grid)


@pytest.mark.parametrize("axis", cifar10_ablations.AXES)
def test_sweep_runner_expands_each_axis(axis, tmp_path):
  cells = sweep.load_config_sweep(f"{CONFIG_FILE}:{axis}")
  keys = {frozenset(k for k in cell if k != "name") for cell in cells}
  assert len(keys) == 1, f"{axis}: cells must vary the same keys, got {keys}"
  expanded = sweep.expand_cells([], {"total_steps": 300}, cells)
  assert [c.name for c in expanded] == [c["name"] for c in cells]
  assert all(c.overrides["total_steps"] == 300 for c in expanded)
  outcomes = sweep.run_sweep(expanded, config=f"{CONFIG_FILE}:{axis}",
                             workdir_root=tmp_path, dry_run=True,
                             console=open(os.devnull, "w"))
  assert [o.status for o in outcomes] == ["dry_run"] * len(cells)


def test_base_config_is_the_cpu_demo_and_bad_axes_raise():
  config = cifar10_ablations.get_config("grid")
  assert config.total_steps == 650 and config.input.batch_size == 128
  assert config.teacher.name == "cifar_resnet56"
  assert config.student.name == "cifar_resnet20"
  with pytest.raises(ValueError, match="Unknown ablation axis 'colour'"):
    cifar10_ablations.get_config("colour")
  with pytest.raises(ValueError, match="known: .*'source'"):
    cifar10_ablations.get_sweep(None)


# --- configs/cifar10_supervised_teacher.py ---


def test_supervised_teacher_recipe():
  config = cifar10_supervised_teacher.get_config()
  assert config.target == "labels"
  assert config.distill.loss == "cross_entropy"
  assert config.distill.loss in losses.LOSSES.names()
  assert config.mixing.mode == "none"
  assert config.input.train_augment == "flip_crop"
  assert config.input.source == (
      "dataset:tar:$SID_SHARED_DIR/data/cifar10/train_jpeg.tar.gz")
  assert (config.optim.name, config.optim.lr, config.optim.momentum,
          config.optim.nesterov, config.optim.weight_decay,
          config.optim.schedule) == ("sgd", 0.1, 0.9, True, 5e-4, "cosine")
  steps_per_epoch = CIFAR10_TRAIN_SIZE // config.input.batch_size  # 390
  assert optim.resolve_total_steps(config.total_steps, config.total_epochs,
                                   steps_per_epoch) == 78_000
  optim.make_optimizer(config.optim, 78_000)
  assert config.student.name in models.MODELS.names()
  # The exported teacher is named after the trained network.
  config.student.name = "wrn40_4"
  assert config.teacher.name == "wrn40_4"
  tfds_config = cifar10_supervised_teacher.get_config("tfds")
  assert tfds_config.input.source == "dataset:tfds:cifar10:train"
  assert tfds_config.eval.dataset == "tfds:cifar10:test"
  with pytest.raises(ValueError, match="'cpu'"):
    cifar10_supervised_teacher.get_config("cpu")


def test_supervised_input_config_feeds_the_labelled_iterator(tmp_path):
  rng = np.random.default_rng(0)
  for class_name in ("cat", "dog"):
    (tmp_path / class_name).mkdir()
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          tmp_path / class_name / f"{i}.png")
  config = cifar10_supervised_teacher.get_config()
  config.input.source = f"dataset:folder:{tmp_path}"
  config.input.batch_size = 8
  assert train_data.patches_per_epoch(config.input) == 8
  iterator = train_data.make_train_iterator(config.input, seed=0)
  batches = list(itertools.islice(iterator, 2))
  for batch in batches:
    images, labels = batch["image"], batch["label"]
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
    assert sorted(labels) == [0] * 4 + [1] * 4  # One epoch per step.
