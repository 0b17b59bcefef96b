"""Long preemptible runs: SIGTERM, corrupt checkpoints, the workdir lock, gs://.

The trainer must survive what a preemptible TPU VM does to it: a SIGTERM
saves the step in flight and exits 75, re-running resumes to the same
parameters as an uninterrupted run; an unreadable latest checkpoint is moved
aside and the previous one used; a second run on a workdir in use is refused;
a `gs://` workdir is written through epath and never becomes a local folder;
result.json says which code and packages produced it.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import logging
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
import jax
import numpy as np
import pytest

from big_vision_sid import checkpointing
from big_vision_sid import cli
from big_vision_sid import metric_writers
from big_vision_sid import preemption
from big_vision_sid import provenance
from big_vision_sid import train
from big_vision_sid import workdir as workdir_lib
from big_vision_sid import workdir_lock
from configs import cifar10_r56_r20
from test_train import _params
from test_train import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent



def _flatten(tree, prefix=""):
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _overrides(config) -> list[str]:
  """`config` as --config.* overrides of configs/cifar10_r56_r20.py."""
  base = _flatten(cifar10_r56_r20.get_config().to_dict())
  wanted = _flatten(config.to_dict())
  return [f"--config.{key}={value}" for key, value in sorted(wanted.items())
          if value != base[key] and value is not None]


def _assert_same_params(workdir_a, workdir_b, step):
  for a, b in zip(_params(workdir_a, step), _params(workdir_b, step)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _checkpoint_steps(workdir) -> list[int]:
  directory = pathlib.Path(workdir) / workdir_lib.CHECKPOINT_DIR
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


# --- Preemption. ---


def _start_training(workdir, config) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "big_vision_sid.train",
       "--config=configs/cifar10_r56_r20.py", f"--workdir={workdir}",
       *_overrides(config)],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_saves_the_step_in_flight_and_resume_matches(tmp_path, eval_npz):
  config = tiny_config()
  config.eval.dataset = eval_npz
  config.log_every_steps = 1
  # Only a preemption saves before the end, which never comes.
  config.total_steps = 100_000
  config.checkpoint.every_steps = 0
  workdir = tmp_path / "preempted"
  proc = _start_training(workdir, config)
  log = workdir / workdir_lib.LOG_FILE
  deadline = time.time() + 300
  while not (log.exists() and " step 1/" in log.read_text()):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)

  assert proc.returncode == preemption.EXIT_CODE == 75, stderr[-3000:]
  last_line = stderr.strip().splitlines()[-1]
  assert last_line.startswith("preempted at step "), stderr[-3000:]
  step = int(last_line.split()[3].rstrip(","))
  assert "checkpoint saved" in last_line and "Traceback" not in stderr
  assert _checkpoint_steps(workdir) == [step]
  assert f"preempted at step {step}, checkpoint saved" in log.read_text()
  assert not (workdir / workdir_lib.LOCK_FILE).exists()

  # Re-running continues from there; the constant lr makes total_steps only
  # the stopping point, so a shorter uninterrupted run is the reference. Both
  # run on the command line: its XLA:CPU flags (perf.apply_default_xla_flags)
  # round differently from this test process's.
  config.total_steps = step + 3
  resumed = _start_training(workdir, config)
  reference = _start_training(tmp_path / "reference", config)
  for run in (resumed, reference):
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
  result = workdir_lib.read_json(workdir / workdir_lib.RESULT_FILE)
  assert result["steps"] == step + 3 and result["steps_this_run"] == 3
  _assert_same_params(tmp_path / "reference", workdir, step + 3)


def test_second_signal_during_the_save_is_ignored(tmp_path, eval_npz, monkeypatch):
  config = tiny_config()
  config.eval.dataset = eval_npz
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  real_save = checkpointing.Checkpointer.save

  def save_while_signalled(self, step, state, meta):
    # Step 3's regular save gets the first SIGTERM, step 4's a second one.
    os.kill(os.getpid(), signal.SIGTERM)
    real_save(self, step, state, meta)

  handler_before = signal.getsignal(signal.SIGTERM)
  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_while_signalled)
  interrupted = tmp_path / "interrupted"
  with pytest.raises(preemption.Preempted, match="preempted at step 4, checkpoint saved"):
    train.train_and_evaluate(config, str(interrupted))
  assert signal.getsignal(signal.SIGTERM) is handler_before
  assert _checkpoint_steps(interrupted) == [3, 4]
  monkeypatch.undo()

  resumed = train.train_and_evaluate(config, str(interrupted))
  assert resumed["steps"] == 6 and resumed["steps_this_run"] == 2
  _assert_same_params(tmp_path / "full", interrupted, 6)
  assert resumed["student_top1"] == pytest.approx(full["student_top1"])


# --- Checkpoint integrity. ---


def _small_state(scale: float):
  return {"w": jax.numpy.arange(12.0).reshape(3, 4) * scale,
          "b": {"bias": jax.numpy.ones(5) * scale}}


def _two_checkpoints(workdir) -> None:
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=5)
  try:
    checkpointer.save(1, _small_state(1.0), {"step": 1})
    checkpointer.save(2, _small_state(2.0), {"step": 2})
  finally:
    checkpointer.close()


def _garble(path: pathlib.Path) -> None:
  """Random bytes of the same length, as a disk or copy error leaves them."""
  data = np.random.default_rng(0).integers(0, 256, path.stat().st_size, np.uint8)
  path.write_bytes(b"\xe7" + data.tobytes()[1:])


@pytest.mark.parametrize("damage", [
    "garble the meta json", "garble the state metadata", "truncate the manifest",
    "remove the state"])
def test_unreadable_latest_checkpoint_is_moved_aside(tmp_path, caplog, damage):
  _two_checkpoints(tmp_path)
  step_dir = tmp_path / "checkpoints" / "2"
  if damage == "garble the meta json":
    _garble(step_dir / "meta" / "metadata")
  elif damage == "garble the state metadata":
    _garble(step_dir / "state" / "_METADATA")
  elif damage == "truncate the manifest":
    (step_dir / "state" / "manifest.ocdbt").write_bytes(b"")
  else:
    for path in sorted((step_dir / "state").rglob("*"), reverse=True):
      path.unlink() if path.is_file() else path.rmdir()
    (step_dir / "state").rmdir()
  before = sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*"))

  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=5)
  try:
    step, state, meta = checkpointer.restore_latest(
        checkpointing.abstract_like(_small_state(1.0)))
    assert checkpointer.all_steps() == [1]
  finally:
    checkpointer.close()
  assert step == 1 and meta == {"step": 1}
  np.testing.assert_array_equal(state["w"], np.arange(12.0).reshape(3, 4))
  messages = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
  assert len(messages) == 1 and "\n" not in messages[0], messages
  assert f"Checkpoint {step_dir} cannot be read (" in messages[0]
  (aside,) = (tmp_path / "checkpoints").glob("corrupt-2-*")
  assert f"moved it aside to {aside.name}" in messages[0]
  assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*")) == before


def test_no_intact_checkpoint_names_the_folder(tmp_path):
  _two_checkpoints(tmp_path)
  for step in (1, 2):
    _garble(tmp_path / "checkpoints" / str(step) / "state" / "_METADATA")
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=5)
  try:
    with pytest.raises(checkpointing.CorruptCheckpointError,
                       match=f"No intact checkpoint in {tmp_path}/checkpoints: "
                       r"the unreadable ones were moved aside \(corrupt-2-.*, corrupt-1-"):
      checkpointer.restore_latest(checkpointing.abstract_like(_small_state(1.0)))
  finally:
    checkpointer.close()
  assert len(list((tmp_path / "checkpoints").glob("corrupt-*"))) == 2


def test_checkpoint_of_another_model_is_an_error_and_stays(tmp_path):
  _two_checkpoints(tmp_path)
  other_model = {"w": jax.numpy.zeros((4, 4)), "b": {"bias": jax.numpy.zeros(5)}}
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=5)
  try:
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match="does not fit this config's model"):
      checkpointer.restore_latest(checkpointing.abstract_like(other_model))
  finally:
    checkpointer.close()
  assert _checkpoint_steps(tmp_path) == [1, 2]
  assert not list((tmp_path / "checkpoints").glob("corrupt-*"))


def test_read_only_checkpointer_reports_corruption_without_moving(tmp_path):
  _two_checkpoints(tmp_path)
  _garble(tmp_path / "checkpoints" / "2" / "meta" / "metadata")
  checkpointer = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  try:
    with pytest.raises(checkpointing.CorruptCheckpointError, match="cannot be read"):
      checkpointer.restore_latest(checkpointing.abstract_like(_small_state(1.0)))
  finally:
    checkpointer.close()
  assert _checkpoint_steps(tmp_path) == [1, 2]


def test_resume_falls_back_past_a_garbled_checkpoint(tmp_path, eval_npz, caplog):
  config = tiny_config()
  config.eval.dataset = eval_npz
  workdir = tmp_path / "run"
  first = train.train_and_evaluate(config, str(workdir))
  assert _checkpoint_steps(workdir) == [3, 6]
  pristine = tmp_path / "pristine"
  shutil.copytree(workdir, pristine)
  _garble(workdir / "checkpoints" / "6" / "state" / "_METADATA")

  resumed = train.train_and_evaluate(config, str(workdir))
  assert resumed["steps"] == 6 and resumed["steps_this_run"] == 3
  assert any("cannot be read (UnicodeDecodeError" in r.getMessage()
             for r in caplog.records)
  assert len(list((workdir / "checkpoints").glob("corrupt-6-*"))) == 1
  _assert_same_params(pristine, workdir, 6)
  assert resumed["student_top1"] == pytest.approx(first["student_top1"])

  # result.json and config.json say what produced them.
  for name in (workdir_lib.RESULT_FILE, workdir_lib.CONFIG_FILE):
    record = workdir_lib.read_json(workdir / name)["provenance"]
    assert record["packages"]["jax"] == jax.__version__
    assert record["packages"]["orbax-checkpoint"]
    assert record["device_count"] == jax.device_count()
    assert record["process_count"] == 1 and record["platform"] == "cpu"
    git = _git_head()
    if git is not None:
      assert record["git"]["commit"] == git
      assert isinstance(record["git"]["dirty"], bool)
  assert "provenance" not in workdir_lib.load_config(str(workdir))

  # Readers ignore the lock: evaluating works while a run holds it.
  lock = workdir_lock.WorkdirLock(str(workdir))
  lock.acquire()
  try:
    run = workdir_lib.load_run(str(workdir))
    assert run.step == 6
  finally:
    lock.release()


def _git_head() -> str | None:
  try:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


# --- Provenance without git. ---


def test_provenance_without_a_checkout_or_git(tmp_path, monkeypatch):
  provenance.git_state.cache_clear()
  monkeypatch.setattr(provenance, "_REPO_ROOT", tmp_path)
  assert provenance.git_state() is None  # Not a checkout.
  provenance.git_state.cache_clear()
  monkeypatch.setattr(provenance, "_REPO_ROOT", ROOT)
  monkeypatch.setenv("PATH", str(tmp_path))  # No git binary.
  assert provenance.git_state() is None
  record = provenance.collect()
  assert record["git"] is None and record["packages"]["numpy"] == np.__version__
  json.dumps(record)
  provenance.git_state.cache_clear()


# --- The workdir lock. ---


def _write_lock(workdir, **fields) -> None:
  holder = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                heartbeat=time.time(), token="someone-else")
  holder.update(fields)
  (pathlib.Path(workdir) / workdir_lib.LOCK_FILE).write_text(json.dumps(holder))


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", ""])
  child.wait()
  return child.pid


def test_live_lock_refuses_a_second_run_naming_the_holder(tmp_path, eval_npz):
  config = tiny_config()
  config.eval.dataset = eval_npz
  workdir = tmp_path / "run"
  workdir.mkdir()
  _write_lock(workdir, pid=os.getpid())
  with pytest.raises(workdir_lock.WorkdirInUseError) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
  assert str(workdir / workdir_lib.LOCK_FILE) in message and "\n" not in message
  assert os.listdir(workdir) == [workdir_lib.LOCK_FILE]  # Wrote nothing.
  assert workdir_lock.read_holder(str(workdir)).token == "someone-else"


@pytest.mark.parametrize("holder, reason", [
    (dict(pid="dead"), "is not running on this host"),
    (dict(host="other-host", heartbeat_age=3600), "heartbeat is 1h00m old"),
])
def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, holder, reason):
  holder = dict(holder)
  if holder.get("pid") == "dead":
    holder["pid"] = _dead_pid()
  if "heartbeat_age" in holder:
    holder["heartbeat"] = time.time() - holder.pop("heartbeat_age")
  _write_lock(tmp_path, **holder)
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  try:
    assert workdir_lock.read_holder(str(tmp_path)) == lock.holder
    (warning,) = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert reason in warning and "\n" not in warning
  finally:
    lock.release()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


def test_lock_of_another_live_host_is_respected_and_unreadable_one_is_not(tmp_path):
  _write_lock(tmp_path, host="other-host", pid=1)
  with pytest.raises(workdir_lock.WorkdirInUseError, match="pid 1 on host other-host"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  (tmp_path / workdir_lib.LOCK_FILE).write_text('{"pid": 12')  # Cut short.
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  lock.release()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  _write_lock(tmp_path, token="a-run-that-took-over")
  lock.release()
  assert workdir_lock.read_holder(str(tmp_path)).token == "a-run-that-took-over"


def test_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_SECONDS", 0.01)
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  try:
    first = workdir_lock.read_holder(str(tmp_path)).heartbeat
    deadline = time.time() + 10
    while workdir_lock.read_holder(str(tmp_path)).heartbeat == first:
      assert time.time() < deadline
      time.sleep(0.01)
  finally:
    lock.release()


# --- Remote (gs://) workdirs. ---


class _FakeGcs(epath_backend.Backend):
  """epath's backend for gs:// paths, storing objects under a local folder."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self._os = epath_backend.os_backend

  def local(self, path) -> str:
    path = os.fspath(path)
    assert path.startswith("gs://"), path
    return os.path.join(self.root, path[len("gs://"):])

  def _remote(self, local: str) -> str:
    return "gs://" + os.path.relpath(local, self.root)

  def open(self, path, mode):
    return self._os.open(self.local(path), mode)

  def exists(self, path):
    return self._os.exists(self.local(path))

  def isdir(self, path):
    return self._os.isdir(self.local(path))

  def listdir(self, path):
    return self._os.listdir(self.local(path))

  def glob(self, path):
    return [self._remote(p) for p in self._os.glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for root, dirs, files in self._os.walk(self.local(top), top_down=top_down,
                                          on_error=on_error):
      yield self._remote(os.fspath(root)), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    self._os.makedirs(self.local(path), exist_ok=exist_ok)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    self._os.mkdir(self.local(path), exist_ok=exist_ok)

  def rmtree(self, path):
    self._os.rmtree(self.local(path))

  def remove(self, path):
    self._os.remove(self.local(path))

  def rename(self, path, dst):
    self._os.rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    self._os.replace(self.local(path), self.local(dst))

  def copy(self, path, dst, overwrite):
    self._os.copy(self.local(path), self.local(dst), overwrite=overwrite)

  def stat(self, path):
    return self._os.stat(self.local(path))


@pytest.fixture(name="fake_gcs")
def fixture_fake_gcs(tmp_path, monkeypatch):
  """gs:// paths go to tmp_path/bucket-store; the test runs in tmp_path/cwd."""
  fake = _FakeGcs(tmp_path / "bucket-store")
  fake.root.mkdir()
  os_backend = epath_backend.os_backend
  monkeypatch.setattr(gpath._GPath, "_backend", property(  # pylint: disable=protected-access
      lambda p: fake if p._uri_scheme == "gs" else os_backend))  # pylint: disable=protected-access
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  return fake


def test_gs_workdir_goes_through_epath_and_never_becomes_a_local_folder(
    tmp_path, eval_npz, fake_gcs, monkeypatch):
  handed_to_orbax, handed_to_tensorboard = [], []
  real_manager = checkpointing.ocp.CheckpointManager

  def recording_manager(directory, options):
    handed_to_orbax.append(directory)
    # Orbax's array files go through tensorstore's own gcs driver, which
    # needs a real bucket: the fake bucket's folder stands in for it.
    return real_manager(fake_gcs.local(directory), options=options)

  def recording_tensorboard(logdir):
    handed_to_tensorboard.append(logdir)

  monkeypatch.setattr(checkpointing.ocp, "CheckpointManager", recording_manager)
  monkeypatch.setattr(metric_writers, "_tensorboard_writer", recording_tensorboard)
  config = tiny_config()
  config.eval.dataset = eval_npz
  result = train.train_and_evaluate(config, "gs://bucket/run")
  assert result["steps"] == 6

  for path in handed_to_orbax + handed_to_tensorboard:
    assert isinstance(path, epath.Path) and os.fspath(path).startswith("gs://bucket/run")
  assert [os.fspath(p) for p in handed_to_orbax] == ["gs://bucket/run/checkpoints"]
  assert os.listdir(tmp_path / "cwd") == []  # No ./gs: folder.
  bucket = fake_gcs.root / "bucket" / "run"
  assert sorted(os.listdir(bucket)) == sorted([
      workdir_lib.CHECKPOINT_DIR, workdir_lib.CONFIG_FILE,
      workdir_lib.METRICS_FILE, workdir_lib.RESULT_FILE])
  assert _checkpoint_steps(bucket) == [3, 6]
  lines = [json.loads(l) for l in (bucket / workdir_lib.METRICS_FILE).read_text().splitlines()]
  assert [l["step"] for l in lines if "loss" in l] == [2, 4, 6]
  assert json.loads((bucket / workdir_lib.RESULT_FILE).read_text())["provenance"]

  # Resuming reads the bucket back; the metrics go on where they stopped.
  config.total_steps = 8
  resumed = train.train_and_evaluate(config, "gs://bucket/run")
  assert resumed["steps_this_run"] == 2
  lines = [json.loads(l) for l in (bucket / workdir_lib.METRICS_FILE).read_text().splitlines()]
  assert [l["step"] for l in lines if "loss" in l] == [2, 4, 6, 8]
  assert os.listdir(tmp_path / "cwd") == []


def test_remote_train_log_is_copied_up(fake_gcs):
  remote = "gs://bucket/run/train.log"
  epath.Path(remote).parent.mkdir(parents=True)
  epath.Path(remote).write_text("from the first run\n")
  handlers_before = list(logging.get_absl_logger().handlers)
  cli.setup_logging(remote)
  try:
    logging.warning("a line after the resume")
    cli.upload_logs()
  finally:
    for handler in set(logging.get_absl_logger().handlers) - set(handlers_before):
      logging.get_absl_logger().removeHandler(handler)
      handler.close()
    local_files = [local for local, _ in cli._REMOTE_LOGS]  # pylint: disable=protected-access
    cli._REMOTE_LOGS.clear()  # pylint: disable=protected-access
  text = (fake_gcs.root / "bucket" / "run" / "train.log").read_text()
  assert text.startswith("from the first run\n") and "a line after the resume" in text
  for local in local_files:
    assert not local.startswith(os.getcwd())
    os.unlink(local)


def test_remote_tensorboard_without_tensorflow_is_skipped_with_a_warning(
    fake_gcs, monkeypatch, caplog):
  del fake_gcs
  monkeypatch.setitem(sys.modules, "clu", None)  # `from clu import ...` fails.
  writer = metric_writers.create_writer("gs://bucket/run")
  writer.write_scalars(1, {"loss": 2.5})
  writer.close()
  assert any("no TensorBoard summaries in the remote workdir gs://bucket/run"
             in r.getMessage() for r in caplog.records)
  text = epath.Path("gs://bucket/run/metrics.jsonl").read_text()
  assert json.loads(text) == {"step": 1, "loss": 2.5}
