"""Multi-process training: 2 processes x 2 devices equal 1 process x 4 devices.

Two trainer processes on this machine run the real command line with
`--distributed`. jax 0.10.2's `jax.distributed.initialize()` reads only the
coordinator address from the environment (JAX_COORDINATOR_ADDRESS); the
process count and index come from a cluster environment, so the test sets
the variables `srun` sets (SLURM_*), which is also how a SLURM user launches
it. CPU collectives across processes need gloo
(JAX_CPU_COLLECTIVES_IMPLEMENTATION). Everything listens and connects on
127.0.0.1 only.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import cifar10_r56_r20
from test_train import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 4
_ATOL = 1e-5
_TIMEOUT_S = 600


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _tiny_overrides(**changes: object) -> list[str]:
  """`tiny_config()` plus `changes` as --config.* overrides of the config file.

  None-valued differences are left out: total_steps wins over total_epochs.
  """
  base = _flatten(cifar10_r56_r20.get_config().to_dict())
  tiny = _flatten(tiny_config().to_dict())
  overrides = {k: v for k, v in tiny.items() if v != base[k] and v is not None}
  overrides.update(changes)
  return [f"--config.{key}={value}" for key, value in sorted(overrides.items())]


def _command(workdir: pathlib.Path, eval_npz: pathlib.Path, backend: str,
             distributed: bool) -> list[str]:
  return [
      sys.executable, "-m", "big_vision_sid.train",
      "--config=configs/cifar10_r56_r20.py", f"--workdir={workdir}",
      *_tiny_overrides(**{
          # Adam turns the float rounding of near-zero gradient entries (a
          # random teacher's) into +-lr steps; SGD keeps rounding at rounding.
          "optim.name": "sgd", "optim.lr": 0.1,
          "total_steps": STEPS, "log_every_steps": 1, "checkpoint.every_steps": 2,
          "eval.dataset": f"npz:{eval_npz}", "input.backend": backend}),
      *(["--distributed"] if distributed else [])]


def _env(devices: int, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "JAX_", "TPU_"))}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", SID_JAX_CACHE_DIR="", **extra)
  return env


def _launch(command: list[str], env: dict[str, str]) -> subprocess.Popen:
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, name: str) -> dict:
  """The RESULT of a finished trainer process (which must have succeeded)."""
  try:
    stdout, stderr = proc.communicate(timeout=_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    stdout, stderr = proc.communicate()
  results = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and len(results) == 1, (
      f"{name} exited {proc.returncode}:\n{stderr[-4000:]}")
  return json.loads(results[0][len("RESULT "):])


def _losses(workdir: pathlib.Path) -> list[float]:
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l["loss"] for l in lines if "loss" in l]


def _params(workdir: pathlib.Path, step: int) -> list[np.ndarray]:
  """The saved student parameters, restored onto this process's one device.

  The checkpoint was written by 4 devices; a target with a single-device
  sharding lets orbax restore it onto another topology.
  """
  path = workdir / "checkpoints" / str(step) / "state"
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    saved = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), saved)
    restored = checkpointer.restore(path, target)
  return [np.asarray(x) for x in jax.tree.leaves(restored["params"])]


def _run_two_processes(workdir: pathlib.Path, eval_npz: pathlib.Path,
                       backend: str) -> list[dict]:
  port = _free_port()
  procs = [_launch(
      _command(workdir, eval_npz, backend, distributed=True),
      _env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
           JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
           JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
           SLURM_JOB_ID="1", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
           SLURM_PROCID=str(i), SLURM_LOCALID=str(i)))
      for i in range(2)]
  try:
    return [_finish(proc, f"process {i}") for i, proc in enumerate(procs)]
  finally:
    for proc in procs:  # One that failed must not leave the other waiting.
      if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tf", "jax"])
def test_two_processes_match_one_process_with_four_devices(tmp_path, backend):
  rng = np.random.default_rng(0)
  eval_npz = tmp_path / "eval.npz"
  np.savez(eval_npz, image=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
           label=rng.integers(0, 10, 20))
  multi, single = tmp_path / "multi", tmp_path / "single"

  results = _run_two_processes(multi, eval_npz, backend)
  reference = _finish(_launch(_command(single, eval_npz, backend, distributed=False),
                              _env(4)), "reference")

  eval_keys = ("student_top1", "student_top5", "teacher_top1", "agreement",
               "eval_examples")
  for result in results:
    assert result["device"] == reference["device"] == "cpu x4"
    assert result["steps"] == STEPS
    assert {k: result[k] for k in eval_keys} == {k: reference[k] for k in eval_keys}
  # Only process 0 writes the run's files, once.
  assert json.loads((multi / "result.json").read_text())["steps"] == STEPS
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
  assert len(_losses(multi)) == STEPS
  checkpoints = sorted(p.name for p in (multi / "checkpoints").iterdir())
  assert checkpoints == sorted(p.name for p in (single / "checkpoints").iterdir())
  assert checkpoints == ["2", "4"]
  # Reduction order differs (gloo across processes): measured <= 2e-6 apart,
  # while two steps move every leaf by >= 6e-5 (a wrong batch split would).
  final, earlier = _params(single, STEPS), _params(single, STEPS - 2)
  assert min(np.abs(a - b).max() for a, b in zip(final, earlier)) > 2 * _ATOL
  for a, b in zip(_params(multi, STEPS), final, strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=_ATOL)
