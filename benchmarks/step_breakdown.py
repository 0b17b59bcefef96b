r"""Where the time of the fused ResNet-56 -> ResNet-20 step goes.

  python benchmarks/step_breakdown.py [--batch=128] [--seconds=10] [--profile_dir=DIR]

Times each part as its own jitted program (teacher forward in inference mode,
student forward+backward, Adam update) next to the fused step. With
`--profile_dir`, also writes a jax.profiler trace of the fused step (for
TensorBoard's profile plugin / Perfetto) and prints the XLA:CPU time per op
kind read back from it (convolutions run asynchronously on Eigen's pool and
are not attributed; they are the remainder of the step). When torch is
installed, the same parts of the PyTorch eager reference step
(`big_vision_sid.bench_torch_reference`) are timed alongside.
"""

import argparse
import collections
import glob
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import optax

from big_vision_sid import losses
from big_vision_sid import models
from big_vision_sid import perf
from big_vision_sid import targets
from big_vision_sid import teachers
from big_vision_sid import train_step


def _rate(fn, seconds: float) -> float:
  """Calls/s of `fn` (which blocks) after one warm-up call."""
  fn()
  count, start = 0, time.perf_counter()
  while count < 3 or time.perf_counter() - start < seconds:
    fn()
    count += 1
  return count / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--profile_dir", default="")
  args = parser.parse_args()

  dtype = jnp.dtype(args.dtype)
  teacher = models.build_model("cifar_resnet56", 10, dtype=dtype)
  student = models.build_model("cifar_resnet20", 10, dtype=dtype)
  images = jax.random.uniform(jax.random.PRNGKey(0), (args.batch, 32, 32, 3))
  teacher_vars = teacher.init(jax.random.PRNGKey(1), images[:1])
  tx = optax.adam(1e-3)
  state = train_step.create_train_state(jax.random.PRNGKey(2), student, tx, (32, 32, 3))
  kl = losses.get_loss("kl")

  teacher_fwd = jax.jit(lambda v, x: teacher.apply(v, x, train=False))
  teacher_logits = teacher_fwd(teacher_vars, images)

  def student_loss(params, batch_stats, x, targets):
    logits, updates = student.apply({"params": params, "batch_stats": batch_stats}, x,
                                    train=True, mutable=["batch_stats"])
    return jnp.mean(kl(logits, targets)), updates

  student_grad = jax.jit(jax.grad(student_loss, has_aux=True))
  grads, _ = student_grad(state.params, state.batch_stats, images, teacher_logits)
  adam_update = jax.jit(lambda g, o, p: tx.update(g, o, p))
  target = targets.from_teacher(teachers.Teacher(
      name="cifar_resnet56", model=teacher, variables=teacher_vars,
      mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=10))
  fused = jax.jit(train_step.make_train_step(
      student=student, target=target, tx=tx, loss_fn=kl,
      loss_kwargs=dict(temperature=8.0), mixing_mode="cutmix", mixing_alpha=1.0),
      donate_argnums=(0,))
  uint8_images = {"image": (images * 255).astype(jnp.uint8)}
  holder = {"state": state}

  def run_fused():
    holder["state"], metrics = fused(holder["state"], teacher_vars, uint8_images)
    metrics["loss"].block_until_ready()

  parts = {
      "teacher forward (R56, inference)": lambda: teacher_fwd(
          teacher_vars, images).block_until_ready(),
      "student forward+backward (R20)": lambda: jax.block_until_ready(student_grad(
          state.params, state.batch_stats, images, teacher_logits)),
      "Adam update": lambda: jax.block_until_ready(
          adam_update(grads, state.opt_state, state.params)),
      "fused step (all of the above + CutMix)": run_fused,
  }
  fused_ms = None
  rows = []
  for name, fn in parts.items():
    ms = 1000.0 / _rate(fn, args.seconds)
    rows.append((name, ms))
    fused_ms = ms
  torch_ms, torch_device = _torch_part_ms(args.batch, args.seconds)
  print(f"batch {args.batch}, {args.dtype}, {jax.devices()[0].platform} x{jax.device_count()}"
        + (f"; PyTorch eager: {torch_device}" if torch_device else ""))
  print("| part | ms/step | share of fused step | img/s | PyTorch eager ms/step |")
  print("|---|---|---|---|---|")
  for (name, ms), torch_part in zip(rows, torch_ms):
    print(f"| {name} | {ms:.1f} | {100 * ms / fused_ms:.0f}% | {args.batch * 1000 / ms:.0f} "
          f"| {torch_part} |")
  if args.profile_dir:
    steps = 5
    with jax.profiler.trace(args.profile_dir):
      for _ in range(steps):
        run_fused()
    print(f"profile trace written to {args.profile_dir}")
    _print_op_kinds(args.profile_dir, steps, fused_ms)


def _torch_part_ms(batch: int, seconds: float) -> tuple[list[str], str]:
  """PyTorch reference ms/step per row of our table ("-" without torch)."""
  try:
    from big_vision_sid import bench_torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError:
    return ["-"] * 4, ""
  device, parts = bench_torch_reference.make_kd_step(batch)
  return [f"{1000.0 / _rate(fn, seconds):.1f}" for fn in parts.values()], device


def _print_op_kinds(profile_dir: str, steps: int, fused_ms: float) -> None:
  """Per-step XLA op time by kind (`add_maximum_fusion.12` -> `add_maximum_fusion`)."""
  try:  # Private, but it is what jax's own profiler tests read traces with.
    from jax._src.lib import _profile_data  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("(this jaxlib cannot read traces back; open the trace in TensorBoard)")
    return
  paths = sorted(glob.glob(f"{profile_dir}/**/*.xplane.pb", recursive=True))
  profile = _profile_data.ProfileData.from_file(paths[-1])
  per_kind = collections.defaultdict(float)
  for plane in profile.planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name:  # XLA:CPU's op threads.
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "end:")):
          continue
        per_kind[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns / 1e6 / steps
  print("| XLA op kind | ms/step | share of fused step |")
  print("|---|---|---|")
  for kind, ms in sorted(per_kind.items(), key=lambda kv: -kv[1])[:12]:
    print(f"| {kind} | {ms:.1f} | {100 * ms / fused_ms:.0f}% |")
  rest = fused_ms - sum(per_kind.values())
  print(f"| (unattributed: convolutions, waits) | {rest:.1f} | {100 * rest / fused_ms:.0f}% |")


if __name__ == "__main__":
  perf.apply_default_xla_flags()
  main()
