"""Evaluators: run a predict function over an EvalSet and report metrics.

An evaluator has the signature `evaluate(predict_fn, eval_set, batch_size)
-> dict[str, float]`; the trainer selects it by name from EVALUATORS.
"""

import functools
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


@functools.partial(jax.jit, static_argnames="num_clips")
def _clip_probability_sums(logits: jnp.ndarray, clips: jnp.ndarray,
                           mask: jnp.ndarray, num_clips: int) -> jnp.ndarray:
  """Softmax probabilities of the (masked) segments summed per clip, [N, C]."""
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  probabilities = probabilities * mask[:, None].astype(jnp.float32)
  return jax.ops.segment_sum(probabilities, clips, num_segments=num_clips)


@EVALUATORS.register("audio_segments")
def evaluate_audio_segments(
    predict_fn: PredictFn, eval_set: Any, batch_size: int
) -> dict[str, float]:
  """Clip accuracy from the mean prediction of its 1-s segments (paper App. C.3).

  Each clip is cut into non-overlapping 1-s segments (`segment_batches` of
  input_pipeline/audio/labeled.py: a remainder shorter than a second is
  dropped, a shorter clip padded to one segment); the student's (and the
  teacher's) softmax probabilities are averaged over a clip's segments, and
  the clip is classified by the mean's argmax. Counted like
  `classification`, per clip.

  Args:
    predict_fn: segments float32 [B, 16000, 1] (int16 values) ->
      (student_logits, teacher_logits or None), each [B, C].
    eval_set: labelled clips (`input_pipeline.audio.labeled.LabeledClips`).
    batch_size: the fixed number of segments per predict call.

  Returns:
    The `classification` metrics over clips, plus `eval_segments`.
  """
  if not hasattr(eval_set, "segment_batches"):
    raise ValueError(
        f"eval.name='audio_segments' needs labelled audio clips "
        f"(eval.dataset='audio:npz:...', 'audio:folder:...' or "
        f"'audio:tfds:...'), not '{getattr(eval_set, 'name', eval_set)}'.")
  metrics = _mean_prediction_metrics(
      predict_fn, eval_set.segment_batches(batch_size), "clip", eval_set.labels)
  metrics["eval_segments"] = int(eval_set.num_segments().sum())
  return metrics


def _mean_prediction_metrics(predict_fn: PredictFn, batches: Any, group: str,
                             labels: np.ndarray) -> dict[str, float]:
  """`classification` metrics of groups classified by their mean prediction.

  Args:
    predict_fn: as for `classification`.
    batches: dicts with 'image', 'mask' and `group` (int32 [B], the example
      each row belongs to).
    group: the key of the example ids.
    labels: int32 [N], one per example.

  Returns:
    Percentages as `classification`'s, over the N examples, and
    `eval_examples`.
  """
  num = len(labels)
  sums = None
  for batch in batches:
    logits = predict_fn(batch["image"])
    batch_sums = [None if l is None else _clip_probability_sums(
        l, batch[group], batch["mask"], num) for l in logits]
    sums = batch_sums if sums is None else [
        None if a is None else a + b for a, b in zip(sums, batch_sums)]
  if sums is None:
    raise ValueError("The eval set yielded no batches.")
  # argmax of an example's summed probabilities = argmax of their mean.
  counts = jax.device_get(_batch_counts(
      sums[0], sums[1], jnp.asarray(labels), jnp.ones(num, bool)))
  metrics = {name: 100.0 * float(count) / num
             for name, count in counts.items() if name != "eval_examples"}
  metrics["eval_examples"] = num
  return metrics


@EVALUATORS.register("video_clips")
def evaluate_video_clips(
    predict_fn: PredictFn, eval_set: Any, batch_size: int
) -> dict[str, float]:
  """Video accuracy from the mean prediction of its 10 temporal clips.

  Each video gives 10 clips of 4 frames evenly spaced in time
  (`clip_batches` of input_pipeline/video/labeled.py, the paper's
  10-temporal-clip test); the student's (and the teacher's) softmax
  probabilities are averaged over a video's clips, which classifies it by
  their argmax, as the paper's test_epoch_end does. Counted like
  `classification`, per video.

  Args:
    predict_fn: clips uint8 [B, 4, S, S, 3] -> (student_logits,
      teacher_logits or None), each [B, C].
    eval_set: labelled videos (`input_pipeline.video.labeled.LabeledVideos`).
    batch_size: the fixed number of clips per predict call.

  Returns:
    The `classification` metrics over videos, plus `eval_clips`.
  """
  if not hasattr(eval_set, "clip_batches"):
    raise ValueError(
        "eval.name='video_clips' needs labelled videos (eval.dataset="
        "'video:folder:ROOT' or 'video:tfds:NAME:SPLIT'), not "
        f"'{getattr(eval_set, 'name', eval_set)}'.")
  metrics = _mean_prediction_metrics(
      predict_fn, eval_set.clip_batches(batch_size), "video", eval_set.labels)
  metrics["eval_clips"] = eval_set.num_clips
  return metrics
