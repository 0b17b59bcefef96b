"""The benchmark's --quick form runs end to end (so it cannot rot)."""

import json
import pathlib
import subprocess
import sys

import pytest

from big_vision_sid import bench
from input_pipeline.image import renderer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_format_table_reports_ratio_to_pytorch():
  rows = [
      {"row": "r56_r20_b128", "synthetic img/s": 150.0, "dtype": "float32"},
      {"row": "torch_r56_r20_b128", "synthetic img/s": 100.0, "dtype": "float32"},
  ]
  table = bench.format_table(rows)
  assert table.splitlines()[0].startswith("| row | synthetic img/s")
  assert "| r56_r20_b128 | 150.0 |" in table
  assert "1.50x" in table


@pytest.mark.slow
def test_quick_benchmark_prints_a_row_per_setting(tmp_path):
  out = tmp_path / "bench.jsonl"
  proc = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.bench", "--quick",
       "--rows=r56_r20_b128,patches_32_tf,patches_32_jax", f"--json_out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["row"] for r in rows] == ["r56_r20_b128", "patches_32_tf", "patches_32_jax"]
  step = rows[0]
  assert step["synthetic img/s"] > 0 and step["pipeline img/s"] > 0
  assert step["compile s"] > 0 and step["peak host MiB"] > 100
  assert all(r["pipeline img/s"] > 0 for r in rows[1:])
  assert "| r56_r20_b128 |" in proc.stdout


def test_jax_renderer_cost_analysis_covers_every_stage():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import patch_throughput  # pylint: disable=g-import-not-at-top
  rows = patch_throughput.jax_cost_per_patch(patch_size=32, batch_size=8)
  assert [r["stage"] for r in rows] == [
      "pyramid_taps", "sample", *renderer.JITTER_STAGES, "augment_taps",
      "augment_sample", "to_words", "to_uint8"]
  for row in rows:
    assert row["bytes_per_patch"] > 0 and row["ms_per_patch"] > 0, row
    # The byte/word conversions are bitcasts and copies: no arithmetic.
    if row["stage"] not in ("to_words", "to_uint8"):
      assert row["flops_per_patch"] > 0, row
  # 8 taps per output pixel gather 4-byte texels: at least 8 * 32 * 32 * 4 B.
  sample = rows[1]
  assert sample["bytes_per_patch"] >= 8 * 32 * 32 * 4
