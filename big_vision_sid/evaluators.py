"""Evaluators: run a predict function over an EvalSet and report metrics.

An evaluator has the signature `evaluate(predict_fn, eval_set, batch_size)
-> dict[str, float]`; the trainer selects it by name from EVALUATORS.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_sid.registry import Registry

# images float32 [B,H,W,3] in [0,1] -> (student logits, teacher logits | None)
PredictFn = Callable[[np.ndarray], tuple[jax.Array, jax.Array | None]]

EVALUATORS = Registry("evaluator")

TOP_K = 5


def _topk_correct(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Whether the label is among the top min(5, C) logits, [B] bool."""
  k = min(TOP_K, logits.shape[-1])
  _, top_indices = jax.lax.top_k(logits, k)
  return jnp.any(top_indices == labels[:, None], axis=-1)


@jax.jit
def _batch_counts(
    student_logits: jnp.ndarray,
    teacher_logits: jnp.ndarray | None,
    labels: jnp.ndarray,
    mask: jnp.ndarray,
) -> dict[str, jnp.ndarray]:
  """Per-batch counts of correct (masked) examples, kept on device."""
  mask = mask.astype(jnp.int32)

  def count(correct):
    return jnp.sum(correct.astype(jnp.int32) * mask)

  student_top1 = jnp.argmax(student_logits, axis=-1)
  counts = {
      "student_top1": count(student_top1 == labels),
      "student_top5": count(_topk_correct(student_logits, labels)),
      "eval_examples": jnp.sum(mask),
  }
  if teacher_logits is not None:
    teacher_top1 = jnp.argmax(teacher_logits, axis=-1)
    counts["teacher_top1"] = count(teacher_top1 == labels)
    counts["teacher_top5"] = count(_topk_correct(teacher_logits, labels))
    counts["agreement"] = count(student_top1 == teacher_top1)
  return counts


@EVALUATORS.register("classification")
def evaluate_classification(
    predict_fn: PredictFn, eval_set: Any, batch_size: int
) -> dict[str, float]:
  """Top-1/top-5 accuracy of student and teacher, and their agreement.

  Counts accumulate on device; the host fetches them once at the end, so the
  loop only waits for the input pipeline.

  Args:
    predict_fn: images float32 [B,H,W,3] in [0,1] -> (student_logits,
      teacher_logits), each [B, C]; teacher_logits may be None, which omits
      the teacher metrics and `agreement`.
    eval_set: an `input_pipeline.eval_data.EvalSet` (anything with
      `batches(batch_size)` yielding padded `image`/`label`/`mask` batches).
    batch_size: the fixed batch size the predict function sees.

  Returns:
    Percentages `student_top1`, `student_top5` and, with a teacher,
    `teacher_top1`, `teacher_top5`, `agreement` (student argmax == teacher
    argmax); plus `eval_examples`, the number of real examples. Top-5 means
    top-min(5, C).
  """
  totals = None
  for batch in eval_set.batches(batch_size):
    student_logits, teacher_logits = predict_fn(batch["image"])
    counts = _batch_counts(student_logits, teacher_logits, batch["label"],
                           batch["mask"])
    totals = counts if totals is None else jax.tree.map(jnp.add, totals,
                                                        counts)
  if totals is None:
    raise ValueError(f"Eval set '{getattr(eval_set, 'name', eval_set)}' "
                     "yielded no batches.")
  totals = jax.device_get(totals)
  num_examples = int(totals.pop("eval_examples"))
  if num_examples == 0:
    raise ValueError(f"Eval set '{getattr(eval_set, 'name', eval_set)}' has "
                     "no real (mask=True) examples.")
  metrics = {name: 100.0 * float(count) / num_examples
             for name, count in totals.items()}
  metrics["eval_examples"] = num_examples
  return metrics
