"""TensorFlow's import banners stay off the console; real errors do not."""

import subprocess
import sys


def _stderr_of(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120, check=False)


def test_import_tensorflow_prints_nothing_and_keeps_stderr_working():
  proc = _stderr_of(
      "import sys, input_pipeline\n"
      "tf = input_pipeline.import_tensorflow()\n"
      "assert input_pipeline.import_tensorflow() is tf\n"
      "print('after', file=sys.stderr)\n")
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == "after\n"


def test_a_failing_import_still_raises_with_its_message():
  proc = _stderr_of(
      "import sys, input_pipeline\n"
      "sys.modules['tensorflow'] = None\n"  # Makes `import tensorflow` fail.
      "del sys.modules['tensorflow']\n"
      "import builtins\n"
      "real = builtins.__import__\n"
      "def fake(name, *a, **k):\n"
      "  if name == 'tensorflow': raise ImportError('no tensorflow here')\n"
      "  return real(name, *a, **k)\n"
      "builtins.__import__ = fake\n"
      "input_pipeline.import_tensorflow()\n")
  assert proc.returncode != 0
  assert "ImportError: no tensorflow here" in proc.stderr
