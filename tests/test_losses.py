"""Tests for big_vision_sid.losses against hand-derived values and properties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import losses

ALL_LOSSES = ["kl", "topk_kl", "l1", "l2", "hard", "cross_entropy"]
TEMPERATURE_SCALED = ["kl", "topk_kl", "l1", "l2"]

# Running example: student [1, 2, 3] vs teacher [3, 2, 1] at tau = 2, so the
# scaled logits are s/tau = [0.5, 1, 1.5] and t/tau = [1.5, 1, 0.5].
STUDENT = jnp.array([[1.0, 2.0, 3.0]])
TEACHER = jnp.array([[3.0, 2.0, 1.0]])
TAU = 2.0


def _loss(name, student=STUDENT, teacher=TEACHER, **kwargs):
  return np.asarray(losses.get_loss(name)(student, teacher, **kwargs))


def test_kl_hand_computed():
  # Both softmaxes share Z = e^1.5 + e^1 + e^0.5, so
  # log p_t - log p_s = t/tau - s/tau = [1, 0, -1] and
  # KL = p_t[0] * 1 + p_t[2] * (-1) = (e^1.5 - e^0.5) / Z.
  z = math.exp(1.5) + math.exp(1.0) + math.exp(0.5)
  expected = (math.exp(1.5) - math.exp(0.5)) / z
  np.testing.assert_allclose(_loss("kl", temperature=TAU), [expected],
                             rtol=1e-6)
  np.testing.assert_allclose(
      _loss("kl", temperature=TAU, tau_squared=True), [4 * expected], rtol=1e-6)


def test_l1_l2_hand_computed():
  # s/tau - t/tau = [-1, 0, 1]: mean |.| = 2/3 and mean (.)^2 = 2/3.
  np.testing.assert_allclose(_loss("l1", temperature=TAU), [2 / 3], rtol=1e-6)
  np.testing.assert_allclose(_loss("l2", temperature=TAU), [2 / 3], rtol=1e-6)
  np.testing.assert_allclose(
      _loss("l2", temperature=TAU, tau_squared=True), [8 / 3], rtol=1e-6)
  # At tau = 1 the differences are [-2, 0, 2]: l2 = 8/3, l1 = 4/3.
  np.testing.assert_allclose(_loss("l2", temperature=1.0), [8 / 3], rtol=1e-6)
  np.testing.assert_allclose(_loss("l1", temperature=1.0), [4 / 3], rtol=1e-6)


def test_topk_kl_hand_computed():
  # Teacher top-2 = classes {0, 1} with scaled logits 1.5 and 1:
  # q = [e^1.5, e^1] / (e^1.5 + e^1); log p_s,i = s_i/tau - log Z.
  z_top = math.exp(1.5) + math.exp(1.0)
  z_student = math.exp(0.5) + math.exp(1.0) + math.exp(1.5)
  q0, q1 = math.exp(1.5) / z_top, math.exp(1.0) / z_top
  log_p0 = 0.5 - math.log(z_student)
  log_p1 = 1.0 - math.log(z_student)
  expected = q0 * (math.log(q0) - log_p0) + q1 * (math.log(q1) - log_p1)
  np.testing.assert_allclose(_loss("topk_kl", temperature=TAU, topk=2),
                             [expected], rtol=1e-6)
  np.testing.assert_allclose(
      _loss("topk_kl", temperature=TAU, topk=2, tau_squared=True),
      [4 * expected], rtol=1e-6)


def test_topk_kl_with_all_classes_equals_kl():
  rng = np.random.default_rng(0)
  student = jnp.asarray(rng.normal(size=(4, 7)) * 3, jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(4, 7)) * 3, jnp.float32)
  for topk in (7, 100):
    np.testing.assert_allclose(
        _loss("topk_kl", student, teacher, topk=topk, temperature=3.0),
        _loss("kl", student, teacher, temperature=3.0), rtol=1e-5, atol=1e-6)


def test_hard_hand_computed():
  # argmax(teacher) = 0, no temperature: -log(e^1 / (e^1 + e^2 + e^3)).
  expected = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1.0
  np.testing.assert_allclose(_loss("hard", temperature=TAU), [expected],
                             rtol=1e-6)


def test_cross_entropy_hand_computed():
  labels = jnp.array([[0.25, 0.25, 0.5]])
  log_z = math.log(math.exp(1) + math.exp(2) + math.exp(3))
  expected = -(0.25 * (1 - log_z) + 0.25 * (2 - log_z) + 0.5 * (3 - log_z))
  np.testing.assert_allclose(_loss("cross_entropy", teacher=labels), [expected],
                             rtol=1e-6)
  one_hot = jnp.array([[0.0, 0.0, 1.0]])
  np.testing.assert_allclose(_loss("cross_entropy", teacher=one_hot),
                             [log_z - 3], rtol=1e-6)


def test_kl_nonnegative_and_zero_when_equal():
  rng = np.random.default_rng(1)
  student = jnp.asarray(rng.normal(size=(64, 10)) * 5, jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(64, 10)) * 5, jnp.float32)
  assert np.all(_loss("kl", student, teacher) >= 0)
  assert np.all(_loss("topk_kl", student, teacher) >= 0)
  for name in ("kl", "l1", "l2"):
    np.testing.assert_allclose(_loss(name, teacher, teacher), 0.0, atol=1e-6)
  # topk_kl of equal logits is exactly -log(student mass on the top-k):
  # log q_i - log p_i = log of the top-k normaliser ratio, the same for all i.
  scaled = np.asarray(teacher, np.float64) / 8.0
  probs = np.exp(scaled) / np.exp(scaled).sum(-1, keepdims=True)
  top5_mass = np.sort(probs, axis=-1)[:, -5:].sum(-1)
  np.testing.assert_allclose(_loss("topk_kl", teacher, teacher),
                             -np.log(top5_mass), rtol=1e-5)


@pytest.mark.parametrize("name", TEMPERATURE_SCALED)
def test_tau_squared_scaling_is_exact(name):
  rng = np.random.default_rng(2)
  student = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
  plain = _loss(name, student, teacher, temperature=8.0)
  scaled = _loss(name, student, teacher, temperature=8.0, tau_squared=True)
  np.testing.assert_allclose(scaled, 64.0 * plain, rtol=1e-6)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradient_finite_for_extreme_logits(name):
  student = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
  teacher = jnp.array([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]])
  if name == "cross_entropy":
    teacher = jax.nn.one_hot(jnp.array([1, 0]), 3)
  loss_fn = losses.get_loss(name)

  def total(s, t):
    return jnp.sum(loss_fn(s, t, temperature=1.0, topk=2))

  value, (grad_s, grad_t) = jax.value_and_grad(total, argnums=(0, 1))(
      student, teacher)
  assert np.isfinite(value)
  assert np.all(np.isfinite(grad_s)) and np.all(np.isfinite(grad_t))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_inputs_give_f32_outputs(name):
  out = losses.get_loss(name)(STUDENT.astype(jnp.bfloat16),
                              TEACHER.astype(jnp.bfloat16), topk=2)
  assert out.dtype == jnp.float32
  assert out.shape == (1,)
  # The bf16 values 1, 2, 3 are exact, so the result matches the f32 one.
  np.testing.assert_allclose(out, _loss(name, topk=2), rtol=1e-6)


def test_losses_jit():
  jitted = jax.jit(lambda s, t: losses.get_loss("kl")(s, t, temperature=TAU))
  np.testing.assert_allclose(jitted(STUDENT, TEACHER), _loss("kl",
                                                             temperature=TAU))


def test_errors():
  with pytest.raises(KeyError, match="Unknown distillation loss 'klx'.*kl"):
    losses.get_loss("klx")
  with pytest.raises(ValueError, match=r"\(1, 3\) and \(1, 4\)"):
    losses.get_loss("kl")(STUDENT, jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="topk >= 1"):
    losses.get_loss("topk_kl")(STUDENT, TEACHER, topk=0)


def test_registry_names():
  assert set(ALL_LOSSES) == set(losses.LOSSES.names())
