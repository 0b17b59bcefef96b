#!/usr/bin/env bash
# Runs the trainer. With no arguments: the embedded default, a short real
# distillation (ResNet-20 -> ResNet-20 from the City image, about 12 minutes on
# a 2-core CPU) that prints teacher and student accuracy on CIFAR-10 test data.
# With a --config argument: passes all arguments to `python -m
# big_vision_sid.train`; other arguments (e.g. --config.total_steps=100) are
# added to the embedded default.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
  echo "run.sh: $PYTHON not found; install first (README): python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
  exit 1
fi

for arg in "$@"; do
  if [[ "$arg" == --config || "$arg" == --config=* ]]; then
    exec "$PYTHON" -m big_vision_sid.train "$@"
  fi
done

export SID_SHARED_DIR="${SID_SHARED_DIR:-$(cd .. && pwd)/shared}"
args=(--config=configs/cifar10_r56_r20.py:cpu_demo --workdir="${WORKDIR:-workdirs/cifar10_r56_r20_cpu_demo}")
if [[ -f "$SID_SHARED_DIR/data/cifar10/test_exact.npz" ]]; then
  echo "run.sh: using teacher, City image and CIFAR-10 test images from $SID_SHARED_DIR"
else
  echo "run.sh: $SID_SHARED_DIR not found: the teacher is downloaded from its public URL to ~/.cache/big_vision_sid/,"
  echo "        CIFAR-10 test comes from tfds (~/tensorflow_datasets) and the source image is skimage:astronaut."
  args+=(--config.eval.dataset=tfds:cifar10:test --config.input.source=skimage:astronaut)
fi
echo "run.sh: workdir ${args[1]#--workdir=} (re-running resumes; delete it to start over)"
exec "$PYTHON" -m big_vision_sid.train "${args[@]}" "$@"
