"""Per-example distillation losses between student and teacher logits.

Every loss has the same signature so that configs can pick one by name:

  fn(student_logits, teacher_logits, *, temperature=8.0, tau_squared=False,
     topk=5) -> float32 [B]

Inputs are [B, C] logits of any float dtype; the loss is always computed in
float32 so that bf16 models do not lose precision in the softmax. Arguments a
loss has no use for (e.g. `topk` for `kl`) are accepted and ignored, so the
trainer can call every loss the same way.

About `tau_squared`: Hinton et al. multiply soft-target losses by tau**2 so
that gradient magnitudes do not shrink with the temperature, and big_vision's
distillation does so. The single-image distillation paper's reference code
does NOT, hence the default False.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from big_vision_sid.registry import Registry

LossFn = Callable[..., jnp.ndarray]

LOSSES = Registry("distillation loss")


def get_loss(name: str) -> LossFn:
  """Returns the loss registered as `name` (KeyError listing known ones)."""
  return LOSSES.get(name)


def _as_f32_pair(
    student_logits: jnp.ndarray, teacher_logits: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
    raise ValueError(
        "Expected student and teacher logits of the same shape [B, C], got "
        f"{student_logits.shape} and {teacher_logits.shape}.")
  return (student_logits.astype(jnp.float32),
          teacher_logits.astype(jnp.float32))


def _tau_factor(temperature: float, tau_squared: bool) -> float:
  return temperature ** 2 if tau_squared else 1.0


@LOSSES.register("kl")
def kl(
    student_logits: jnp.ndarray,
    teacher_logits: jnp.ndarray,
    *,
    temperature: float = 8.0,
    tau_squared: bool = False,
    topk: int = 5,
) -> jnp.ndarray:
  """KL(softmax(t/tau) || softmax(s/tau)), times tau**2 iff `tau_squared`."""
  del topk
  s, t = _as_f32_pair(student_logits, teacher_logits)
  log_p_teacher = jax.nn.log_softmax(t / temperature, axis=-1)
  log_p_student = jax.nn.log_softmax(s / temperature, axis=-1)
  # log_softmax is finite wherever the logits are, so a vanishing teacher
  # probability contributes exactly 0 * finite = 0 (the 0 log 0 = 0 rule).
  per_example = jnp.sum(
      jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return per_example * _tau_factor(temperature, tau_squared)


@LOSSES.register("topk_kl")
def topk_kl(
    student_logits: jnp.ndarray,
    teacher_logits: jnp.ndarray,
    *,
    temperature: float = 8.0,
    tau_squared: bool = False,
    topk: int = 5,
) -> jnp.ndarray:
  """KL from the teacher's top-k distribution to the full student softmax.

  With K = the teacher's k largest logits (k = min(topk, C); ties resolved by
  `jax.lax.top_k`, i.e. lower class index first):

    q_i = softmax(t/tau) restricted to K and renormalised (q_i = 0 off K),
    p = softmax(s/tau) over ALL C classes,
    loss = sum_{i in K} q_i (log q_i - log p_i)   (times tau**2 iff tau_squared).

  Student mass outside K is not penalised directly, only through the
  normalisation of p: putting mass there lowers p_i on K and raises the loss.
  For k = C this is exactly `kl`.
  """
  s, t = _as_f32_pair(student_logits, teacher_logits)
  if topk < 1:
    raise ValueError(f"topk_kl needs topk >= 1, got {topk}.")
  k = min(topk, t.shape[-1])
  scaled_t = t / temperature
  _, top_indices = jax.lax.top_k(scaled_t, k)
  in_top = jnp.any(
      top_indices[:, :, None] == jnp.arange(t.shape[-1])[None, None, :], axis=1)
  log_norm = jax.nn.logsumexp(scaled_t, axis=-1, keepdims=True, where=in_top)
  log_q = jnp.where(in_top, scaled_t - log_norm, 0.0)
  q = jnp.where(in_top, jnp.exp(log_q), 0.0)
  log_p_student = jax.nn.log_softmax(s / temperature, axis=-1)
  per_example = jnp.sum(q * (log_q - log_p_student), axis=-1)
  return per_example * _tau_factor(temperature, tau_squared)


def _scaled_logit_distance(distance: Callable[[jnp.ndarray], jnp.ndarray],
                           formula: str) -> LossFn:
  """A loss on the tau-scaled logits: mean over classes of distance(s/tau - t/tau)."""

  def loss(
      student_logits: jnp.ndarray,
      teacher_logits: jnp.ndarray,
      *,
      temperature: float = 8.0,
      tau_squared: bool = False,
      topk: int = 5,
  ) -> jnp.ndarray:
    del topk
    s, t = _as_f32_pair(student_logits, teacher_logits)
    per_example = jnp.mean(distance(s / temperature - t / temperature), axis=-1)
    return per_example * _tau_factor(temperature, tau_squared)

  loss.__doc__ = f"Mean over classes of {formula}, times tau**2 iff `tau_squared`."
  return loss


LOSSES.register("l1")(_scaled_logit_distance(jnp.abs, "|s/tau - t/tau|"))
LOSSES.register("l2")(_scaled_logit_distance(jnp.square, "(s/tau - t/tau)**2"))


@LOSSES.register("hard")
def hard(
    student_logits: jnp.ndarray,
    teacher_logits: jnp.ndarray,
    *,
    temperature: float = 8.0,
    tau_squared: bool = False,
    topk: int = 5,
) -> jnp.ndarray:
  """Cross-entropy of softmax(s) to the teacher's argmax class.

  Hard pseudo-labels carry no temperature: `temperature`, `tau_squared` and
  `topk` are ignored.
  """
  del temperature, tau_squared, topk
  s, t = _as_f32_pair(student_logits, teacher_logits)
  pseudo_labels = jnp.argmax(t, axis=-1)
  log_p_student = jax.nn.log_softmax(s, axis=-1)
  return -jnp.take_along_axis(
      log_p_student, pseudo_labels[:, None], axis=-1)[:, 0]


@LOSSES.register("cross_entropy")
def cross_entropy(
    student_logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    temperature: float = 8.0,
    tau_squared: bool = False,
    topk: int = 5,
) -> jnp.ndarray:
  """Supervised cross-entropy -sum_c labels_c log softmax(s)_c.

  Takes one-hot or soft `labels` [B, C] in the place of the teacher logits
  (call it as `fn(student_logits, labels)`). Supervised training uses no
  temperature: `temperature`, `tau_squared` and `topk` are ignored.
  """
  del temperature, tau_squared, topk
  s, labels = _as_f32_pair(student_logits, labels)
  return -jnp.sum(labels * jax.nn.log_softmax(s, axis=-1), axis=-1)
