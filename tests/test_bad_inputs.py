"""Each bad command-line input fails with its own one-line message, rc != 0.

The cases run in-process through the trainer's own flag parsing
(`train.parse_flags`) and command (`train.run` inside
`cli.run_reporting_result`), which is what `python -m big_vision_sid.train`
does, without starting Python for each. `python tests/test_bad_inputs.py`
runs them all and prints docs/bad_inputs.md.
"""

import contextlib
import dataclasses
import importlib
import io
import os
import pathlib
import sys
import tempfile

from absl import flags
from ml_collections import config_flags
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # Run as a script.
  sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_sid import cli
from big_vision_sid import config_checks
from big_vision_sid import paths
from big_vision_sid import train
from configs import cifar10_r56_r20
# pylint: enable=g-import-not-at-top,wrong-import-position

CONFIG = "configs/cifar10_r56_r20.py:cpu_demo"
PAPER_CONFIG = "configs/cifar10_r56_r20.py"  # 1,000 epochs, no total_steps.
TMP = "<tmp>"  # A fresh temporary folder, in the arguments and messages.


@dataclasses.dataclass(frozen=True)
class Case:
  """Command-line arguments after --config, and a fragment of the message."""
  args: tuple[str, ...]
  expected: str
  needs_shared: bool = False
  config: str = CONFIG


def _config(*overrides: str) -> tuple[str, ...]:
  return (f"--workdir={TMP}/run",) + tuple(f"--config.{o}" for o in overrides)


CASES = [
    # Ranges of numeric fields.
    Case(_config("input.batch_size=0"),
         "input.batch_size=0 is out of range: must be an integer >= 1."),
    Case(_config("input.batch_size=-8"), "input.batch_size=-8 is out of range"),
    Case(_config("total_steps=0"), "total_steps=0 is out of range: must be None or an integer >= 1."),
    Case(_config("total_epochs=-1"), "total_epochs=-1.0 is out of range: must be None or a number in (0, inf)."),
    Case(_config("log_every_steps=0"), "log_every_steps=0 is out of range: must be an integer >= 1."),
    Case(_config("seed=-1"), "seed=-1 is out of range: must be an integer >= 0."),
    Case(_config("optim.lr=-0.1"), "optim.lr=-0.1 is out of range: must be a number in [0, inf)."),
    Case(_config("optim.lr=nan"), "optim.lr=nan is not valid: must be a number in [0, inf)."),
    Case(_config("optim.weight_decay=-0.1"), "optim.weight_decay=-0.1 is out of range: must be a number in [0, inf)."),
    Case(_config("optim.warmup_steps=-5"), "optim.warmup_steps=-5 is out of range: must be an integer >= 0."),
    Case(_config("optim.b2=1.0"), "optim.b2=1.0 is out of range: must be a number in [0, 1)."),
    Case(_config("optim.momentum=-0.5"), "optim.momentum=-0.5 is out of range: must be a number in [0, 1)."),
    Case(_config("optim.end_lr_factor=2"), "optim.end_lr_factor=2.0 is out of range: must be a number in [0, 1]."),
    Case(_config("optim.grad_clip_norm=-1"), "optim.grad_clip_norm=-1.0 is out of range: must be None or a number in [0, inf)."),
    Case(_config("distill.temperature=0"), "distill.temperature=0.0 is out of range: must be a number in (0, inf)."),
    Case(_config("distill.topk=0"), "distill.topk=0 is out of range: must be an integer >= 1."),
    Case(_config("mixing.alpha=0"), "mixing.alpha=0.0 is out of range: must be a number in (0, inf)."),
    Case(_config("input.patch_size=0"), "input.patch_size=0 is out of range: must be an integer >= 1."),
    Case(_config("input.num_patches=-1"), "input.num_patches=-1 is out of range: must be an integer >= 0."),
    Case(_config("input.initcrop=1.5"), "input.initcrop=1.5 is out of range: must be a number in (0, 1]."),
    Case(_config("input.degrees=-10"), "input.degrees=-10.0 is out of range: must be a number in [0, 180]."),
    Case(_config("input.jitter.p=2"), "input.jitter.p=2.0 is out of range: must be a number in [0, 1]."),
    Case(_config("input.pad=-4"), "input.pad=-4 is out of range: must be an integer >= 0."),
    Case(_config("input.num_parallel_calls=0"), "input.num_parallel_calls=0 is out of range: must be -1 (autotune) or an integer >= 1."),
    Case(_config("input.selection=class_balanced", "input.selection_pool=0"),
         "input.selection_pool=0 is out of range: must be an integer >= 1."),
    Case(_config("input.selection=kmeans", "input.selection_clusters=0"),
         "input.selection_clusters=0 is out of range: must be an integer >= 1."),
    Case(_config("input.selection=entropy", "input.selection_temperature=0"),
         "input.selection_temperature=0.0 is out of range: must be a number in (0, inf)."),
    Case(_config("eval.batch_size=0"), "eval.batch_size=0 is out of range: must be an integer >= 1."),
    Case(_config("eval.every_steps=-1"), "eval.every_steps=-1 is out of range: must be an integer >= 0."),
    Case(_config("checkpoint.keep=0"), "checkpoint.keep=0 is out of range: must be None or an integer >= 1."),
    Case(_config("checkpoint.every_seconds=-1"), "checkpoint.every_seconds=-1.0 is out of range: must be a number in [0, inf)."),
    Case(_config("input.batch_size=0", "optim.lr=-1"),
         "input.batch_size=0 is out of range: must be an integer >= 1; optim.lr=-1.0 is out of range"),
    # Step budget.
    Case(_config("input.num_patches=0"),
         "total_epochs=1000.0 needs a fixed patch set (input.num_patches > 0)",
         config=PAPER_CONFIG),
    # Names that a registry does not know.
    Case(_config("mixing.mode=cutmixx"), "mixing.mode='cutmixx' is not valid: must be a known mixing (cutmix,"),
    Case(_config("mixing.partner=rolled"), "mixing.partner='rolled' is not valid: must be a known mixing partner (permutation, reverse, roll)."),
    Case(_config("distill.loss=kl_typo"), "distill.loss='kl_typo' is not valid: must be a known distillation loss (cross_entropy, hard, kl,"),
    Case(_config("target=teachr"), "target='teachr' is not valid: must be a known target ("),
    Case(_config("input.backend=torch"), "input.backend='torch' is not valid: must be a known input backend (jax, tf)."),
    Case(_config("optim.name=adamx"), "optim.name='adamx' is not valid: must be a known optimizer (adam, adamw, sgd)."),
    Case(_config("optim.schedule=linear"), "optim.schedule='linear' is not valid: must be a known lr schedule (constant, cosine, step)."),
    Case(_config("input.selection=random"), "input.selection='random' is not valid: must be a known patch selection (none,"),
    Case(_config("input.train_augment=flip"), "input.train_augment='flip' is not valid: must be a known train augmentation (none, flip_crop, rrc_flip)."),
    Case(_config("student.name=resnet9"), "student.name='resnet9' is not valid: must be a known model (audio_cnn, audio_cnn_x2, cifar_resnet110,"),
    Case(_config("teacher.format=pt"), "teacher.format='pt' is not valid: must be a known teacher format (akamaster_cifar_resnet,"),
    Case(_config("compute_dtype=float64"), "compute_dtype='float64' is not valid: must be a known compute dtype (float32, bfloat16, float16)."),
    Case(_config("eval.name=regression"), "eval.name='regression' is not valid: must be a known evaluator (audio_segments, classification"),
    # Command-line mistakes (absl/ml_collections parsing).
    Case(_config("no_such_key=1"), "error: unknown config key 'no_such_key'"),
    Case(_config("input.batch_size=abc"), "error: bad command line:"),
    # Files.
    Case(_config("input.source=/nonexistent/image.jpg"), "/nonexistent/image.jpg", needs_shared=True),
    Case(_config("input.patch_size=4000"), "smaller than the patch size 4000", needs_shared=True),
    Case(_config("eval.dataset=cifar11_test"), "cifar11_test", needs_shared=True),
    # Workdirs.
    Case((f"--workdir={TMP}/a_file",), f"Workdir {TMP}/a_file is a file, not a directory."),
    Case((f"--workdir={TMP}/a_file/run",),
         f"Workdir {TMP}/a_file/run cannot be created: Not a directory ({TMP}/a_file/run)."),
    Case(("--workdir=/proc/no_such_dir/run",),
         "Workdir /proc/no_such_dir/run cannot be created: No such file or directory (/proc/no_such_dir)."),
    Case(("--workdir=/sys",), "Workdir /sys is not writable: Permission denied."),
]


def _flag_values(argv: list[str]) -> flags.FlagValues:
  """The trainer's flags, defined afresh (absl's global ones parse once)."""
  values = flags.FlagValues()
  # The config flag defines its --config.* overrides from the argv it is given.
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  flags.DEFINE_bool("distributed", False, "", flag_values=values)
  return values


def run_case(case: Case, tmp: pathlib.Path) -> tuple[int, str]:
  """Runs the trainer on `case` in-process: (exit code, last stderr line)."""
  (tmp / "a_file").write_text("not a folder")
  argv = ["train", f"--config={ROOT / case.config}",
          *(a.replace(TMP, str(tmp)) for a in case.args)]
  stderr = io.StringIO()
  absl_logger = train.logging.get_absl_logger()
  handlers_before = list(absl_logger.handlers)
  try:
    with contextlib.redirect_stderr(stderr):
      values = _flag_values(argv)
      train.parse_flags(argv, values)
      cli.run_reporting_result(lambda: train.run(values.config, values.workdir))
  except SystemExit as e:
    if isinstance(e.code, str):  # sys.exit(message): Python prints it, exits 1.
      stderr.write(e.code + "\n")
      code = 1
    else:
      code = e.code
  else:
    code = 0
  finally:
    for handler in set(absl_logger.handlers) - set(handlers_before):
      absl_logger.removeHandler(handler)  # train.log of this case.
      handler.close()
  lines = stderr.getvalue().strip().splitlines()
  return code, (lines[-1] if lines else "").replace(str(tmp), TMP)


@pytest.mark.parametrize("name, arg", [
    ("cifar10_r56_r20", None), ("cifar10_r56_r20", "cpu_demo"),
    ("cifar10_supervised_teacher", None), ("cifar10_wrn40_4_wrn16_4", None),
    ("cifar10_ablations", None), ("imagenet_r18_r50x2", None),
    ("imagenet_r18_r50", None), ("imagenet_r50_r50", None),
    ("imagenet_lite0_r50", None)])
def test_shipped_configs_pass_the_checks(name, arg):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(arg) if arg else module.get_config()
  assert config_checks.check_config(config) == []


def test_warmup_longer_than_training_only_warns():
  config = cifar10_r56_r20.get_config("cpu_demo")
  config.total_steps = 10
  assert config_checks.check_config(config) == [
      "optim.warmup_steps=20 >= total_steps=10: the learning rate never "
      "reaches optim.lr"]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c.args) for c in CASES])
def test_bad_input_fails_with_one_line(tmp_path, case):
  if case.needs_shared and not (paths.shared_dir() / "images").exists():
    pytest.skip("shared data not available")
  code, message = run_case(case, tmp_path)
  assert code != 0 and code != 75, message
  assert message.startswith("error: ") and case.expected in message, message
  checkpoints = tmp_path / "run" / "checkpoints"
  assert not checkpoints.exists() or not any(checkpoints.iterdir())


def render_markdown() -> str:
  """docs/bad_inputs.md: each case's arguments and the exact line it printed."""
  rows = []
  for case in CASES:
    with tempfile.TemporaryDirectory() as tmp:
      code, message = run_case(case, pathlib.Path(tmp))
    args = " ".join(case.args)
    if case.config != CONFIG:
      args = f"--config={case.config} {args}"
    args, message = (text.replace("|", "\\|") for text in (args, message))
    rows.append(f"| `{args}` | {code} | `{message}` |")
  return "\n".join([
      "# Bad inputs and their one-line errors",
      "",
      "Every row is a real run of",
      f"`python -m big_vision_sid.train --config={CONFIG} ARGUMENTS`",
      "(in-process, by `tests/test_bad_inputs.py`, which asserts each message;",
      "`python tests/test_bad_inputs.py > docs/bad_inputs.md` regenerates this",
      f"page). `{TMP}` is a fresh temporary folder holding a file `a_file`. Each",
      "fails before anything is compiled and before any checkpoint is written,",
      "with exit code 1 and the last line of stderr shown. Config values are",
      "checked up front by",
      "`big_vision_sid/config_checks.py`; several bad values are reported",
      "together in the same line. A run stopped by SIGTERM/SIGINT exits 75",
      "instead (`preemption.EXIT_CODE`) after saving a checkpoint.",
      "",
      "Legal but probably unintended settings only warn, e.g.",
      "`--config.total_steps=10` with `optim.warmup_steps=20` logs",
      "`Config: optim.warmup_steps=20 >= total_steps=10: the learning rate never",
      "reaches optim.lr.` and trains.",
      "",
      "| arguments | exit code | last line of stderr |",
      "| --- | --- | --- |",
      *rows,
      "",
  ])


if __name__ == "__main__":
  os.chdir(ROOT)
  print(render_markdown(), end="")
