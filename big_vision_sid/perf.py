"""Process-level performance settings applied by the entry points."""

import os

import jax

# XLA:CPU's experimental YNNPACK fusions make the convolution-heavy CIFAR
# step slower on the 2-core x86 machines we measured (benchmarks/README.md);
# the flag is only appended when the user has not set it.
_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def apply_default_xla_flags() -> None:
  """Adds our default XLA:CPU flags to XLA_FLAGS (before JAX initialises)."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in _CPU_FLAGS:
    name = flag.split("=")[0]
    if name not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags


def enable_compilation_cache() -> None:
  """Persists compiled programs so a resumed run skips recompilation.

  `SID_JAX_CACHE_DIR` picks the directory; an empty value disables the cache.
  """
  cache_dir = os.environ.get(
      "SID_JAX_CACHE_DIR", os.path.expanduser("~/.cache/big_vision_sid/jax"))
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
