"""Tests for the model zoo: shapes, parameter counts, BatchNorm, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import models

# name -> (num_classes, input size) for the shape check, which traces the
# model with jax.eval_shape: full-size networks cost no compute there.
# Numerics are checked against numpy references in test_teachers.py.
_SHAPE_CASES = {
    "cifar_resnet8": (10, 32), "cifar_resnet20": (10, 32),
    "cifar_resnet32": (10, 32),
    "cifar_resnet44": (10, 32), "cifar_resnet56": (10, 32),
    "cifar_resnet110": (10, 32), "wrn16_4": (10, 32), "wrn40_4": (10, 32),
    "vgg16_bn": (10, 32), "vgg19_bn": (100, 32), "resnet18": (10, 64),
    "resnet34": (10, 64), "resnet50": (10, 64), "resnet101": (1000, 224),
    "resnet50x2": (1000, 224), "efficientnet_lite0": (10, 64),
    "vit_s16": (10, 32), "vit_b16": (1000, 224),
    # Waveform models read any input as samples (test_audio_model.py).
    "audio_cnn": (10, 64), "audio_cnn_x2": (12, 64),
    # Images are one-frame clips; tests/test_video_x3d.py runs real clips.
    "x3d_xs": (400, 32), "x3d_w5_d3": (101, 32), "x3d_tiny": (10, 32),
}
# Published parameter counts (torchvision, akamaster, timm).
_PARAM_COUNTS = {
    ("cifar_resnet20", 10, 32): 269_722,
    ("resnet18", 1000, 224): 11_689_512,
    ("resnet34", 1000, 224): 21_797_672,
    ("resnet50", 1000, 224): 25_557_032,
    ("resnet101", 1000, 224): 44_549_160,
    ("resnet50x2", 1000, 224): 68_883_240,
    ("vit_s16", 1000, 224): 22_050_664,
    ("vit_b16", 1000, 224): 86_567_656,
}


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_variables(model, size):
  return jax.eval_shape(model.init, jax.random.key(0),
                        jnp.zeros((1, size, size, 3)))


def test_every_registered_model_is_tested():
  assert set(models.MODELS.names()) == set(_SHAPE_CASES)


@pytest.mark.parametrize("name", sorted(_SHAPE_CASES))
def test_forward_shape_abstract(name):
  num_classes, size = _SHAPE_CASES[name]
  # ViT-B/16 needs 224 pixels at patch 16; the others take any size here.
  overrides = {"patch_size": 8} if name == "vit_s16" else {}
  model = models.build_model(name, num_classes, **overrides)
  variables = _abstract_variables(model, size)
  expected = ({"params"} if name.startswith(("vit", "audio"))
              else {"params", "batch_stats"})
  assert set(variables) == expected
  logits = jax.eval_shape(model.apply, variables,
                          jnp.zeros((2, size, size, 3)))
  assert logits.shape == (2, num_classes)
  assert logits.dtype == jnp.float32


def test_vit_real_forward():
  # The CNNs run for real in the BatchNorm, bfloat16 and teacher tests.
  model = models.build_model("vit_s16", 10, patch_size=8, depth=2)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  assert variables["params"]["pos_embedding"].shape == (1, 17, 384)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 10)
  assert logits.dtype == jnp.float32
  # The zero-initialised head gives uniform predictions at init.
  np.testing.assert_array_equal(logits, np.zeros((2, 10)))


@pytest.mark.parametrize("name,num_classes,size", sorted(_PARAM_COUNTS))
def test_parameter_count(name, num_classes, size):
  variables = _abstract_variables(
      models.build_model(name, num_classes), size)
  assert _count(variables["params"]) == _PARAM_COUNTS[
      (name, num_classes, size)]


def test_cifar_resnet_names_match_torch_layout():
  variables = _abstract_variables(models.build_model("cifar_resnet20", 10), 32)
  params = variables["params"]
  assert set(params) == {"conv1", "bn1", "linear"} | {
      f"layer{s}_{i}" for s in (1, 2, 3) for i in range(3)}
  assert set(params["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2"}
  assert params["layer2_0"]["conv1"]["kernel"].shape == (3, 3, 16, 32)
  assert set(variables["batch_stats"]["bn1"]) == {"mean", "var"}


def test_train_mode_updates_batch_stats_with_momentum_0_9():
  model = models.build_model("cifar_resnet20", 10)
  x = 3.0 + jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  logits, updates = model.apply(variables, x, train=True,
                                mutable=["batch_stats"])
  assert logits.shape == (4, 10)
  # The first BN sees conv1(x); its running mean moves 10% of the way from
  # 0 to the batch mean.
  conv_out = jax.lax.conv_general_dilated(
      x, variables["params"]["conv1"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(
      updates["batch_stats"]["bn1"]["mean"],
      0.1 * np.mean(conv_out, axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  # Eval mode is deterministic and does not depend on the batch.
  single = model.apply(variables, x[:1])
  np.testing.assert_allclose(single, model.apply(variables, x)[:1],
                             rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = models.build_model("cifar_resnet20", 10, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits = model.apply(variables, x)
  assert logits.dtype == jnp.float32
  reference = models.build_model("cifar_resnet20", 10).apply(variables, x)
  np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)


def test_unknown_model_name():
  with pytest.raises(KeyError, match="resnet9000.*cifar_resnet20"):
    models.build_model("resnet9000", 10)


def test_vit_rejects_indivisible_image_size():
  model = models.build_model("vit_s16", 10)
  with pytest.raises(ValueError, match="30x30.*patch size 16"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 30, 30, 3)))
