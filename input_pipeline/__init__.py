"""Input pipelines: single-datum sample generators and evaluation sets.

TensorFlow (tf.data, tfds) is imported lazily, only by the parts that use it,
and through `import_tensorflow`, which keeps its start-up banners off the
console.
"""

import os
import sys
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow() -> ModuleType:
  """`import tensorflow`, without the lines its C++ runtime prints on import.

  TensorFlow writes "oneDNN custom operations are on ..." and an absl notice
  to stderr before its log level applies. Turning oneDNN off
  (TF_ENABLE_ONEDNN_OPTS=0) would silence them but slows the tf renderer by a
  quarter at 224 px, so stderr is muted for the first import only; a failing
  import still raises its ImportError.
  """
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow  # pylint: disable=g-import-not-at-top
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
  return tensorflow
