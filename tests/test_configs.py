"""Experiment configs: every file builds, the paper recipe is the official one."""

import importlib
import pathlib

import pytest

from big_vision_sid import losses
from big_vision_sid import mixing
from big_vision_sid import models
from big_vision_sid import targets
from configs import cifar10_r56_r20

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIG_MODULES = sorted(
    p.stem for p in CONFIG_DIR.glob("*.py")
    if p.stem not in ("__init__", "common") and not p.stem.endswith("_common"))
# Configs that need an argument: one of them each.
_REQUIRED_ARGS = {"cifar10_r56_compress": "prune50"}


@pytest.mark.parametrize("name", CONFIG_MODULES)
def test_every_config_names_registered_parts(name):
  config = importlib.import_module(f"configs.{name}").get_config(
      _REQUIRED_ARGS.get(name))
  assert config.target in targets.TARGETS
  assert config.student.name in models.MODELS
  assert config.distill.loss in losses.LOSSES
  assert config.mixing.mode in mixing.MIXERS
  assert config.mixing.partner in mixing.PARTNERS


def test_paper_recipe_follows_the_official_cifar_code():
  config = cifar10_r56_r20.get_config()
  assert (config.teacher.name, config.student.name) == (
      "cifar_resnet56", "cifar_resnet20")
  assert config.input.source.endswith("images/animals.png")
  assert (config.input.num_patches, config.input.batch_size,
          config.total_epochs) == (50_000, 512, 1000.0)
  assert (config.mixing.mode, config.mixing.alpha, config.mixing.partner) == (
      "cutmix", 0.25, "reverse")
  assert (config.optim.name, config.optim.lr, config.optim.schedule) == (
      "adam", 1e-3, "constant")
  assert (config.distill.loss, config.distill.temperature,
          config.distill.tau_squared) == ("kl", 8.0, False)


def test_cpu_demo_keeps_its_own_recipe():
  config = cifar10_r56_r20.get_config("cpu_demo")
  assert (config.mixing.alpha, config.mixing.partner) == (1.0, "roll")
  assert (config.optim.lr, config.optim.schedule, config.optim.warmup_steps) == (
      1e-2, "cosine", 20)
