"""The trainer on audio: a supervised teacher, then distillation from a recording."""

import json

import numpy as np
import pytest

from big_vision_sid import cli
from big_vision_sid import config_checks
from big_vision_sid import train
from configs import audio_speech_commands
from configs import audio_tts_commands

SR = 16_000


def _tiny_data(tmp_path):
  """A 3-class keyword npz (train/test, 4 speakers) and a 3-s recording."""
  rng = np.random.default_rng(0)
  t = np.arange(SR) / SR
  labels = np.arange(24) % 3
  tones = np.stack([0.3 * np.sin(2 * np.pi * (300 + 400 * l) * t)
                    for l in labels]) + rng.normal(0, 0.01, (24, SR))
  keywords = tmp_path / "keywords.npz"
  np.savez(keywords, audio=(tones * 32767).astype(np.int16), label=labels,
           speaker=np.arange(24) % 4,
           split=np.array(["train"] * 18 + ["test"] * 6))
  recording = tmp_path / "recording.npz"
  np.savez(recording, audio=(rng.normal(0, 0.1, 3 * SR) * 32767).astype(
      np.int16), sample_rate=SR)
  return keywords, recording


def _tiny(config, keywords, **overrides):
  config.unlock()
  config.student.num_classes = 3
  config.teacher.num_classes = 3
  config.input.batch_size = 4
  config.total_steps = 3
  config.log_every_steps = 1
  config.optim.warmup_steps = 0
  config.checkpoint.every_steps = 0
  config.checkpoint.every_seconds = 0.0
  config.eval.dataset = f"audio:npz:{keywords}:test"
  config.eval.batch_size = 4
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.mark.slow
def test_teacher_then_distillation_from_one_recording(tmp_path):
  keywords, recording = _tiny_data(tmp_path)
  teacher_config = _tiny(audio_tts_commands.get_config("teacher"), keywords,
                         **{"input.source": f"audio:npz:{keywords}:train"
                                            "[~speakers::4]"})
  teacher_dir = tmp_path / "teacher"
  result = train.train_and_evaluate(teacher_config, str(teacher_dir))
  assert result["steps"] == 3 and result["teacher"] == "labels"
  assert result["eval_examples"] == 6 and result["eval_segments"] == 6
  assert (teacher_dir / "teacher.msgpack").exists()

  student_config = _tiny(
      audio_tts_commands.get_config("distill_news"), keywords,
      **{"input.source": f"audio:{recording}", "input.num_patches": 16,
         "input.cache_dir": str(tmp_path / "cache"),
         "teacher.checkpoint": str(teacher_dir / "teacher.msgpack")})
  result = train.train_and_evaluate(student_config, str(tmp_path / "student"))
  assert result["steps"] == 3 and result["teacher"] == "audio_cnn"
  assert {"student_top1", "teacher_top1", "agreement"} <= set(result)
  # The trained teacher's accuracy on the same clips is what its run saw.
  saved = json.loads((teacher_dir / "result.json").read_text())
  assert result["teacher_top1"] == pytest.approx(saved["student_top1"])
  assert len(list((tmp_path / "cache").glob("audio_clips_*.npy"))) == 1


def test_a_missing_recording_fails_before_anything_is_written(tmp_path):
  keywords, _ = _tiny_data(tmp_path)
  config = _tiny(audio_tts_commands.get_config("distill_noise"), keywords,
                 **{"input.source": f"audio:{tmp_path}/gone.wav",
                    "teacher.format": "random"})
  with pytest.raises(cli.USER_ERRORS, match="gone.wav does not exist"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("module,args", [
    (audio_tts_commands, ("teacher", "distill_news", "distill_languages",
                          "distill_noise")),
    (audio_speech_commands, ("teacher", "distill"))])
def test_audio_configs_pass_the_checks(module, args):
  for arg in args:
    config = module.get_config(arg)
    assert config_checks.check_config(config) == []
    assert config.eval.name == "audio_segments"
    assert config.input.source.startswith("audio:")
  with pytest.raises(ValueError, match="Unknown config argument"):
    module.get_config("distill_typo")


@pytest.mark.parametrize("override,message", [
    (("input.audio.augmentations", ("gain", "echo")),
     "input.audio.augmentations=('gain', 'echo') is out of range: must be a "
     "non-empty list of audio augmentations (background, clicks"),
    (("input.audio.clip_seconds", 0.5),
     "input.audio.clip_seconds=0.5 is out of range: must be a number in [1, inf)"),
    (("input.audio.augment_p", 1.5), "input.audio.augment_p=1.5 is out of range"),
    (("teacher.mean", (0.0, 0.0, 0.0)),
     "teacher.mean=(0.0, 0.0, 0.0) must hold 1 value for audio"),
    (("eval.name", "classification"),
     "eval.name='classification' does not fit eval.dataset="),
    (("input.selection", "entropy"), "input.selection='entropy' is image-only"),
])
def test_bad_audio_settings_are_config_errors(override, message):
  config = audio_tts_commands.get_config("distill_news")
  config.unlock()
  _tiny(config, "k.npz", **dict([override]))
  with pytest.raises(config_checks.ConfigError) as info:
    config_checks.check_config(config)
  assert message in str(info.value)
