"""The target registry: what the student regresses to, chosen by config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_vision_sid import losses
from big_vision_sid import models
from big_vision_sid import targets
from big_vision_sid import teachers
from big_vision_sid import train_step
from configs import cifar10_r56_r20
from configs import cifar10_supervised_teacher


def _random_teacher_config():
  config = cifar10_r56_r20.get_config("cpu_demo")
  config.teacher.update(name="cifar_resnet8", format="random", checkpoint="")
  return config


def test_registry_names_and_unknown_target():
  assert set(targets.TARGETS.names()) >= {"teacher", "labels"}
  config = _random_teacher_config()
  config.target = "oracle"
  with pytest.raises(KeyError, match="Unknown target 'oracle'.*labels.*teacher"):
    targets.build_target(config, jnp.float32)


def test_teacher_target_is_the_frozen_teachers_forward_pass():
  config = _random_teacher_config()
  target = targets.build_target(config, jnp.float32)
  assert (target.name, target.num_classes, target.needs_labels) == (
      "cifar_resnet8", 10, False)
  assert target.mean == config.teacher.mean and target.std == config.teacher.std
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  model = models.build_model("cifar_resnet8", 10)
  expected = model.apply(target.variables, x, train=False)
  got = target.logits(target.variables, {"image": None}, x)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(target.predict(target.variables, x), expected,
                             rtol=1e-6, atol=1e-6)
  # Frozen: no gradient reaches the teacher's output.
  grad = jax.grad(lambda v: jnp.sum(target.logits(v, {}, x)))(target.variables)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grad))


def test_teacher_target_class_count_must_match_the_student():
  config = _random_teacher_config()
  config.student.num_classes = 100
  with pytest.raises(ValueError, match="student.num_classes=100.*10 classes"):
    targets.build_target(config, jnp.float32)


def test_label_target_is_one_hot_and_needs_no_mixing():
  config = cifar10_supervised_teacher.get_config()
  target = targets.build_target(config, jnp.float32)
  assert target.needs_labels and target.exports_student and target.predict is None
  assert target.variables == {}
  labels = jnp.array([3, 0, 9])
  np.testing.assert_array_equal(
      target.logits({}, {"label": labels}, None), np.eye(10)[[3, 0, 9]])
  config.mixing.mode = "cutmix"
  with pytest.raises(ValueError, match="target='labels' needs mixing.mode='none'"):
    targets.build_target(config, jnp.float32)


def test_the_step_regresses_the_student_to_the_target():
  """One step's loss equals the loss of the student against the target."""
  student = models.build_model("cifar_resnet8", 10)
  teacher = teachers.Teacher(
      name="t", model=student,
      variables=student.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3))),
      mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=10)
  target = targets.from_teacher(teacher)
  tx = optax.sgd(0.0)
  state = train_step.create_train_state(jax.random.key(0), student, tx, (32, 32, 3))
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
  step = train_step.make_train_step(
      student=student, target=target, tx=tx, loss_fn=losses.get_loss("kl"),
      loss_kwargs=dict(temperature=8.0), mixing_mode="none", mixing_alpha=1.0)
  _, metrics = jax.jit(step)(state, teacher.variables, {"image": images})
  x = (images / 255.0 - 0.5) / 0.25
  student_logits = student.apply(
      {"params": state.params, "batch_stats": state.batch_stats}, x, train=True,
      mutable=["batch_stats"])[0]
  teacher_logits = student.apply(teacher.variables, x, train=False)
  expected = jnp.mean(losses.get_loss("kl")(student_logits, teacher_logits,
                                            temperature=8.0))
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
