"""Data-free compression through the trainer: target 'self' + config.compress."""

import jax
import numpy as np
import pytest

from big_vision_sid import evaluate
from big_vision_sid import train
from big_vision_sid import workdir as workdir_lib
from big_vision_sid.compression import plan as compression_plan
from big_vision_sid.compression import pruning
from configs import cifar10_r56_compress
from tests.test_train import tiny_config


def _self_config(eval_npz, **compress):
  config = tiny_config()
  config.eval.dataset = eval_npz
  config.target = "self"
  config.student.name = config.teacher.name
  config.compress.update(dict(bn="frozen", **compress))
  return config



def test_configs_and_plan_errors():
  for arg in ("prune50", "prune75", "prune90", "int8"):
    config = cifar10_r56_compress.get_config(arg)
    assert config.target == "self" and config.student.name == config.teacher.name
  assert cifar10_r56_compress.get_config("prune75").compress.sparsity == 0.75
  with pytest.raises(ValueError, match="Unknown config argument 'prune60'"):
    cifar10_r56_compress.get_config("prune60")
  compress = cifar10_r56_compress.get_config("prune50").compress
  compress.sparsity = 1.0
  with pytest.raises(ValueError, match=r"compress.sparsity must be in \[0, 1\)"):
    compression_plan.build_plan(compress, 100)
  compress.update(dict(sparsity=0.5, bn="sometimes"))
  with pytest.raises(ValueError, match="compress.bn='sometimes'"):
    compression_plan.build_plan(compress, 100)
  assert not compression_plan.build_plan(None, 100).prunes


def test_self_target_needs_the_teachers_architecture(tmp_path, eval_npz):
  config = _self_config(eval_npz)
  config.student.name = "cifar_resnet20"
  with pytest.raises(ValueError, match="student.name must equal teacher.name"):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_pruned_clone_stays_pruned_through_steps_save_and_resume(tmp_path, eval_npz):
  config = _self_config(eval_npz, sparsity=0.5, schedule="polynomial",
                        begin_fraction=0.0, end_fraction=0.5, frequency=1)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  run = workdir_lib.load_run(str(tmp_path / "full"))
  assert pruning.sparsity_stats(jax.device_get(run.state.params))[
      "sparsity"] == pytest.approx(0.5, abs=1e-3)
  # Mid-schedule (step 3 of 6: the polynomial is at 0.5 (1 - (2/3)^3)).
  mid = workdir_lib.load_run(str(tmp_path / "full"), step=3)
  assert pruning.sparsity_stats(jax.device_get(mid.state.params))[
      "sparsity"] == pytest.approx(0.5 * (1 - (1 - 2 / 3) ** 3), abs=2e-3)
  # evaluate reproduces the run's own numbers.
  again = evaluate.evaluate_run(str(tmp_path / "full"))
  for key in ("student_top1", "teacher_top1", "agreement"):
    assert again[key] == full[key]

  # Interrupted and resumed (one-shot: the schedule does not depend on the
  # run's length): the same final weights and the same zeros.
  config.compress.schedule = "one_shot"
  finals = []
  for name, lengths in (("straight", (6,)), ("resumed", (3, 6))):
    for total_steps in lengths:
      config.total_steps = total_steps
      train.train_and_evaluate(config, str(tmp_path / name))
    finals.append(jax.device_get(
        workdir_lib.load_run(str(tmp_path / name)).state.params))
  for a, b in zip(*map(jax.tree.leaves, finals)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert np.array_equal(a == 0, b == 0)
  assert pruning.sparsity_stats(finals[1])["sparsity"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.slow
def test_no_fine_tuning_is_the_teacher_pruned_and_int8_is_evaluated_quantised(
    tmp_path, eval_npz):
  # lr 0, one step: one-shot pruning (and int8) of the teacher, nothing else.
  config = _self_config(eval_npz, sparsity=0.5, schedule="one_shot",
                        quantize="int8", calibration_patches=32)
  config.optim.lr = 0.0
  config.total_steps = 1
  result = train.train_and_evaluate(config, str(tmp_path))
  run = workdir_lib.load_run(str(tmp_path))
  teacher = jax.device_get(run.target.variables["params"])
  masks = jax.device_get(pruning.compute_masks(teacher, 0.5, "global"))
  expected = jax.device_get(pruning.apply_masks(teacher, masks))
  for a, b in zip(jax.tree.leaves(expected),
                  jax.tree.leaves(jax.device_get(run.state.params))):
    np.testing.assert_array_equal(a, b)
  # The calibrated ranges are saved and evaluate runs the fake-quant model.
  assert (tmp_path / workdir_lib.QUANT_RANGES_FILE).exists()
  again = evaluate.evaluate_run(str(tmp_path))
  for key in ("student_top1", "student_top5", "agreement"):
    assert again[key] == result[key]
