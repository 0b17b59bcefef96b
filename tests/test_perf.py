"""perf.default_xla_flags: our defaults never override what the user set."""

from big_vision_sid import perf


def test_cpu_only_install_gets_both_defaults():
  flags = perf.default_xla_flags("", cpu_only=True).split()
  assert "--xla_cpu_experimental_ynn_fusion_type=" in flags
  assert "--xla_disable_hlo_passes=cse_barrier_expander" in flags


def test_accelerator_install_keeps_barrier_expander():
  flags = perf.default_xla_flags("--foo=1", cpu_only=False)
  assert flags == "--foo=1 --xla_cpu_experimental_ynn_fusion_type="


def test_user_flags_win():
  user = ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT "
          "--xla_disable_hlo_passes=foo")
  assert perf.default_xla_flags(user, cpu_only=True) == user
