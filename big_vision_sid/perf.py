"""Process-level performance settings applied by the entry points."""

import importlib.metadata
import os

import jax

# XLA:CPU's experimental YNNPACK fusions make the convolution-heavy CIFAR
# step slower on the 2-core x86 machines we measured (benchmarks/README.md).
_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
# Keeps `models.layers.materialize` barriers until fusion; without this
# XLA:CPU drops them first and recomputes BatchNorm chains inside the weight
# gradient transposes (+14% step throughput, benchmarks/README.md). Only
# applied where no accelerator plugin is installed: that is all we measured.
_CPU_ONLY_FLAGS = ("--xla_disable_hlo_passes=cse_barrier_expander",)
_ACCELERATOR_DISTRIBUTIONS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm",
                              "libtpu", "jax-tpu")


def _accelerator_plugin_installed() -> bool:
  for dist in importlib.metadata.distributions():
    name = (dist.metadata["Name"] or "").lower()
    if name.startswith(_ACCELERATOR_DISTRIBUTIONS):
      return True
  return False


def default_xla_flags(existing: str, cpu_only: bool) -> str:
  """`existing` XLA_FLAGS plus our defaults for flags the user did not set."""
  flags = existing
  for flag in _CPU_FLAGS + (_CPU_ONLY_FLAGS if cpu_only else ()):
    name = flag.split("=")[0]
    if name not in flags:
      flags = f"{flags} {flag}".strip()
  return flags


def apply_default_xla_flags() -> None:
  """Adds our default XLA:CPU flags to XLA_FLAGS (before JAX initialises)."""
  os.environ["XLA_FLAGS"] = default_xla_flags(
      os.environ.get("XLA_FLAGS", ""),
      cpu_only=not _accelerator_plugin_installed())


def enable_compilation_cache() -> None:
  """Persists compiled programs so a resumed run skips recompilation.

  `SID_JAX_CACHE_DIR` picks the directory; an empty value disables the cache.
  """
  cache_dir = os.environ.get(
      "SID_JAX_CACHE_DIR", os.path.expanduser("~/.cache/big_vision_sid/jax"))
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
