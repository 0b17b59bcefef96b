"""Workdir helpers: atomic writes, durations, cache keys, loading a run."""

import json
import os

import numpy as np
import pytest

from big_vision_sid import workdir


def test_atomic_write_failure_keeps_old_content_and_no_temp_file(tmp_path):
  path = tmp_path / "result.json"
  path.write_text("old")

  def failing_writer(f):
    f.write("half of the new cont")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    workdir.atomic_write(path, failing_writer, binary=False)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["result.json"]


def test_atomic_write_failure_on_new_file_leaves_nothing(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    workdir.atomic_write(tmp_path / "a.npy", _raise_interrupt)
  assert os.listdir(tmp_path) == []


def _raise_interrupt(f):
  f.write(b"\x93NUMPY")
  raise KeyboardInterrupt


def test_atomic_write_creates_directory_and_honours_umask(tmp_path):
  old_umask = os.umask(0o027)
  try:
    workdir.write_text(tmp_path / "sub" / "report.md", "# hi\n")
  finally:
    os.umask(old_umask)
  path = tmp_path / "sub" / "report.md"
  assert path.read_text() == "# hi\n"
  assert os.stat(path).st_mode & 0o777 == 0o640  # 0o666 & ~0o027.
  assert os.listdir(tmp_path / "sub") == ["report.md"]


def test_write_json_round_trip_sorted(tmp_path):
  payload = {"b": [1, 2.5, None], "a": {"nested": "é", "flag": True}}
  path = tmp_path / "x.json"
  workdir.write_json(path, payload)
  assert workdir.read_json(path) == payload
  assert json.loads(path.read_text()) == payload
  assert path.read_text().index('"a"') < path.read_text().index('"b"')


def test_save_npy_round_trip(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  workdir.save_npy(tmp_path / "patches.npy", array)
  np.testing.assert_array_equal(np.load(tmp_path / "patches.npy"), array)


@pytest.mark.parametrize("text, message", [
    ("{not json", "x.json is not valid JSON"),
    ("[1, 2]", "x.json holds a list, not an object"),
])
def test_read_json_errors(tmp_path, text, message):
  (tmp_path / "x.json").write_text(text)
  with pytest.raises(ValueError, match=message):
    workdir.read_json(tmp_path / "x.json")


@pytest.mark.parametrize("seconds, expected", [
    (None, "-"), (float("nan"), "-"), (float("inf"), "-"), (-3, "0s"),
    (0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (185, "3m05s"),
    (3599, "59m59s"), (3600, "1h00m"), (3725, "1h02m"), (90061, "25h01m")])
def test_format_duration(seconds, expected):
  assert workdir.format_duration(seconds) == expected


def test_cache_key_changes_with_each_field_and_ignores_order():
  fields = {"source": "city.jpg", "seed": 0, "size": 32, "crop": (0.1, 1.0)}
  key = workdir.cache_key(fields)
  assert len(key) == 24 and int(key, 16) >= 0
  assert workdir.cache_key(dict(reversed(list(fields.items())))) == key
  changed = {"source": "animals.png", "seed": 1, "size": 64, "crop": (0.5, 1.0)}
  for name, value in changed.items():
    assert workdir.cache_key({**fields, name: value}) != key, name
  assert workdir.cache_key({**fields, "extra": None}) != key
  assert workdir.cache_key(fields, length=8) == key[:8]


def test_file_identity_changes_when_replaced(tmp_path):
  path = tmp_path / "a.txt"
  workdir.write_text(path, "one")
  first = workdir.file_identity(str(path))
  workdir.write_text(path, "three")
  assert first[0] == str(path) and first != workdir.file_identity(str(path))


@pytest.mark.parametrize("config, target", [
    ({"teacher": {"format": "akamaster_cifar_resnet"}}, "teacher"),
    ({"teacher": {"format": "none"}}, "labels"),  # Supervised, old configs.
    ({"teacher": {"format": "random"}, "target": "labels"}, "labels"),
])
def test_load_config_fills_in_target(tmp_path, config, target):
  workdir.write_json(tmp_path / workdir.CONFIG_FILE, config)
  assert workdir.load_config(str(tmp_path)).target == target


def test_load_run_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="Workdir .*absent does not exist"):
    workdir.load_run(str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    workdir.load_run(str(tmp_path))
  workdir.write_json(tmp_path / workdir.CONFIG_FILE, {"teacher": {}})
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    workdir.load_run(str(tmp_path))
  assert os.listdir(tmp_path) == [workdir.CONFIG_FILE]  # Created nothing.
  (tmp_path / workdir.CHECKPOINT_DIR / "3.orbax-checkpoint-tmp").mkdir(
      parents=True)
  with pytest.raises(FileNotFoundError, match="has no checkpoint in"):
    workdir.load_run(str(tmp_path))
  assert os.listdir(tmp_path / workdir.CHECKPOINT_DIR) == [
      "3.orbax-checkpoint-tmp"]  # An unfinished save is left alone.
