"""Tests for big_vision_sid.evaluators on padded eval sets with known logits."""

import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import evaluators
from input_pipeline import eval_data

NUM_CLASSES = 6
LABELS = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
# Rank of the true label in each example's logits (0 = argmax).
STUDENT_RANKS = [0, 0, 0, 1, 5, 0, 2, 5, 0, 0]
TEACHER_RANKS = [0, 0, 0, 0, 0, 0, 0, 0, 1, 5]


def _logits_with_rank(label, rank, num_classes=NUM_CLASSES):
  """Logits ranking the other classes in index order, `label` at `rank`."""
  order = [c for c in range(num_classes) if c != label]
  order.insert(rank, label)
  logits = np.zeros(num_classes, np.float32)
  logits[order] = np.arange(num_classes, 0, -1)
  return logits


def _table(ranks, labels=LABELS, num_classes=NUM_CLASSES):
  rows = [_logits_with_rank(l, r, num_classes) for l, r in zip(labels, ranks)]
  # The last row serves padding (index -1): it is "correct" for the padded
  # label 0, so counting padding would change every metric.
  rows.append(_logits_with_rank(0, 0, num_classes))
  return np.stack(rows)


def _eval_set(tmp_path, labels=LABELS):
  # Example i is a constant image of value (i + 1) / 255; padding is 0.
  images = np.broadcast_to(
      np.arange(1, len(labels) + 1, dtype=np.uint8)[:, None, None, None],
      (len(labels), 4, 4, 3))
  np.savez(tmp_path / "set.npz", image=images, label=np.array(labels))
  return eval_data.load_eval_set(f"npz:{tmp_path}/set.npz", image_size=4)


def _fake_predict(student_table, teacher_table, seen_shapes):
  def predict(images):
    seen_shapes.append(images.shape)
    index = np.rint(images[:, 0, 0, 0] * 255).astype(int) - 1
    teacher = None if teacher_table is None else jnp.asarray(
        teacher_table[index])
    return jnp.asarray(student_table[index]), teacher
  return predict


def test_hand_computed_percentages_on_padded_set(tmp_path):
  seen_shapes = []
  predict = _fake_predict(_table(STUDENT_RANKS), _table(TEACHER_RANKS),
                          seen_shapes)
  metrics = evaluators.evaluate_classification(predict, _eval_set(tmp_path), 4)
  # Student: rank 0 for examples 0,1,2,5,8,9 -> 6/10; rank <= 4 for all but
  # 4 and 7 -> 8/10. Teacher: rank 0 for 0..7 -> 8/10; rank <= 4 for all but
  # 9 -> 9/10. Argmaxes agree where both rank the label first: 0,1,2,5 -> 4/10
  # (elsewhere the one with rank > 0 predicts class 0 or 1, not the label).
  assert metrics == pytest.approx({
      "student_top1": 60.0, "student_top5": 80.0, "teacher_top1": 80.0,
      "teacher_top5": 90.0, "agreement": 40.0, "eval_examples": 10})
  assert isinstance(metrics["eval_examples"], int)
  # 10 examples in 3 batches of one fixed shape: the last one is padded.
  assert seen_shapes == [(4, 4, 4, 3)] * 3


def test_padding_never_counts(tmp_path):
  # All-wrong predictions: padding rows (correct for label 0) must not count.
  wrong_ranks = [5] * len(LABELS)
  predict = _fake_predict(_table(wrong_ranks), _table(wrong_ranks), [])
  for batch_size in (3, 4, 7, 16):
    metrics = evaluators.evaluate_classification(
        predict, _eval_set(tmp_path), batch_size)
    assert metrics["student_top1"] == 0.0
    assert metrics["teacher_top5"] == 0.0
    assert metrics["eval_examples"] == len(LABELS)


def test_without_teacher_only_student_metrics(tmp_path):
  predict = _fake_predict(_table(STUDENT_RANKS), None, [])
  metrics = evaluators.evaluate_classification(predict, _eval_set(tmp_path), 4)
  assert metrics == pytest.approx(
      {"student_top1": 60.0, "student_top5": 80.0, "eval_examples": 10})


def test_top5_with_fewer_than_five_classes(tmp_path):
  labels = [0, 1, 2, 0, 1]
  ranks = [0, 2, 1, 2, 0]
  table = _table(ranks, labels, num_classes=3)
  predict = _fake_predict(table, table, [])
  metrics = evaluators.evaluate_classification(
      predict, _eval_set(tmp_path, labels), 2)
  # With 3 classes "top-5" is top-3: always right. Top-1: ranks 0 -> 2/5.
  assert metrics["student_top5"] == 100.0
  assert metrics["student_top1"] == pytest.approx(40.0)
  assert metrics["agreement"] == 100.0


def test_registered_and_empty_set_error():
  assert evaluators.EVALUATORS.get("classification") is (
      evaluators.evaluate_classification)

  class EmptySet:
    name = "empty"

    def batches(self, batch_size):
      del batch_size
      return iter([])

  with pytest.raises(ValueError, match="'empty' yielded no batches"):
    evaluators.evaluate_classification(lambda x: (x, None), EmptySet(), 4)
