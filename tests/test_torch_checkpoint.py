"""Tests for the torch-free `torch.save` reader."""

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from big_vision_sid import paths
from big_vision_sid import torch_checkpoint

_AKAMASTER = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th",
              44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.fixture(name="fake_torch")
def fixture_fake_torch(monkeypatch):
  """Stand-ins for the torch globals a state-dict pickle references.

  Pickle writes classes and functions by module and name, so registering
  these under `torch` / `torch._utils` makes the stdlib pickler emit exactly
  the references torch itself would, without torch installed.
  """
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  for storage_name in ("FloatStorage", "LongStorage", "HalfStorage",
                       "ComplexFloatStorage"):
    cls = type(storage_name, (), {"__module__": "torch"})
    setattr(torch, storage_name, cls)

  def _rebuild_tensor_v2(*args):
    raise AssertionError("only referenced by the pickle, never called")

  def _rebuild_parameter(*args):
    raise AssertionError("only referenced by the pickle, never called")

  for fn in (_rebuild_tensor_v2, _rebuild_parameter):
    fn.__module__ = "torch._utils"
    fn.__qualname__ = fn.__name__
    setattr(utils, fn.__name__, fn)
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


class _Storage:
  """A storage to write: torch storage class name and its flat data."""

  def __init__(self, key, storage_class, data):
    self.key, self.storage_class, self.data = key, storage_class, data


class _Tensor:
  """Pickles as `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride), False,
                 collections.OrderedDict())

  def __reduce__(self):
    return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _Parameter:
  """Pickles as `_rebuild_parameter(tensor, requires_grad, hooks)`."""

  def __init__(self, tensor):
    self.tensor = tensor

  def __reduce__(self):
    return (sys.modules["torch._utils"]._rebuild_parameter,
            (self.tensor, True, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
  """Writes storages as persistent ids, as torch.save does."""

  def __init__(self, file, legacy):
    super().__init__(file, protocol=2)
    self.legacy = legacy
    self.storages = []

  def persistent_id(self, obj):
    if not isinstance(obj, _Storage):
      return None
    if obj not in self.storages:
      self.storages.append(obj)
    pid = ("storage", obj.storage_class, obj.key, "cpu", obj.data.size)
    return pid + (None,) if self.legacy else pid


def _write_zip(path, obj, byteorder="little"):
  buffer = io.BytesIO()
  pickler = _Pickler(buffer, legacy=False)
  pickler.dump(obj)
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", buffer.getvalue())
    archive.writestr("archive/byteorder", byteorder)
    archive.writestr("archive/version", "3\n")
    for storage in pickler.storages:
      order = "<" if byteorder == "little" else ">"
      data = storage.data.astype(storage.data.dtype.newbyteorder(order))
      archive.writestr(f"archive/data/{storage.key}", data.tobytes())


def _write_legacy(path, obj):
  with open(path, "wb") as f:
    for header in (_LEGACY_MAGIC, 1001,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
      pickle.dump(header, f, protocol=2)
    pickler = _Pickler(f, legacy=True)
    pickler.dump(obj)
    pickle.dump([s.key for s in pickler.storages], f, protocol=2)
    for storage in pickler.storages:
      f.write(struct.pack("<q", storage.data.size))
      f.write(storage.data.astype("<" + storage.data.dtype.str[1:]).tobytes())


def _example_checkpoint(torch):
  """A wrapped DataParallel state dict exercising strides and offsets."""
  rng = np.random.default_rng(0)
  weights = rng.normal(size=24).astype(np.float32)
  shared = _Storage("0", torch.FloatStorage, weights)
  counts = _Storage("1", torch.LongStorage, np.array([7], np.int64))
  half = _Storage("2", torch.HalfStorage, np.arange(4, dtype=np.float16))
  state_dict = collections.OrderedDict([
      # [2, 3, 4] contiguous, and a transposed [4, 3] view at offset 12.
      ("module.conv.weight", _Tensor(shared, 0, (2, 3, 4), (12, 4, 1))),
      ("module.fc.weight", _Parameter(_Tensor(shared, 12, (4, 3), (1, 4)))),
      ("module.bn.num_batches_tracked", _Tensor(counts, 0, (), ())),
      ("module.half", _Tensor(half, 1, (3,), (1,))),
  ])
  expected = {
      "conv.weight": weights.reshape(2, 3, 4),
      "fc.weight": weights[12:].reshape(3, 4).T,
      "half": np.arange(1, 4, dtype=np.float16),
  }
  return {"epoch": 3, "state_dict": state_dict}, expected


def _assert_state_dicts_equal(actual, expected):
  assert list(actual) == list(expected)
  for key, value in expected.items():
    assert actual[key].dtype == value.dtype, key
    np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.parametrize("writer", [_write_zip, _write_legacy])
def test_round_trip_of_hand_written_checkpoint(tmp_path, fake_torch, writer):
  obj, expected = _example_checkpoint(fake_torch)
  path = str(tmp_path / "model.pt")
  writer(path, obj)
  state_dict = torch_checkpoint.load_torch_state_dict(path)
  _assert_state_dicts_equal(state_dict, expected)
  assert state_dict["fc.weight"].flags["C_CONTIGUOUS"]


def test_big_endian_zip(tmp_path, fake_torch):
  obj, expected = _example_checkpoint(fake_torch)
  path = str(tmp_path / "big.pt")
  _write_zip(path, obj, byteorder="big")
  _assert_state_dicts_equal(
      torch_checkpoint.load_torch_state_dict(path), expected)


def test_full_checkpoint_keeps_wrapper(tmp_path, fake_torch):
  obj, _ = _example_checkpoint(fake_torch)
  path = str(tmp_path / "model.pt")
  _write_zip(path, obj)
  loaded = torch_checkpoint.load_torch_checkpoint(path)
  assert loaded["epoch"] == 3
  assert loaded["state_dict"]["module.bn.num_batches_tracked"] == 7


def test_unsupported_storage_type(tmp_path, fake_torch):
  storage = _Storage("0", fake_torch.ComplexFloatStorage,
                     np.zeros(2, np.complex64))
  path = str(tmp_path / "complex.pt")
  _write_zip(path, {"w": _Tensor(storage, 0, (2,), (1,))})
  with pytest.raises(ValueError, match="ComplexFloatStorage.*complex.pt"):
    torch_checkpoint.load_torch_state_dict(path)


def test_refuses_arbitrary_globals(tmp_path):
  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as archive:
    # Unpickling this with the stdlib would call os.getcwd().
    archive.writestr("archive/data.pkl", b"cos\ngetcwd\n)R.")
  with pytest.raises(ValueError, match="os.getcwd"):
    torch_checkpoint.load_torch_state_dict(str(path))


def test_garbage_file_raises(tmp_path):
  path = tmp_path / "garbage.pt"
  path.write_bytes(b"this is not a checkpoint\x00\x01\x02")
  with pytest.raises(ValueError, match="garbage.pt is not a torch"):
    torch_checkpoint.load_torch_state_dict(str(path))


def test_truncated_legacy_file_raises(tmp_path, fake_torch):
  obj, _ = _example_checkpoint(fake_torch)
  path = tmp_path / "model.pt"
  _write_legacy(str(path), obj)
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(ValueError, match="truncated"):
    torch_checkpoint.load_torch_state_dict(str(path))


def test_missing_file_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pt"):
    torch_checkpoint.load_torch_state_dict(str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("depth", sorted(_AKAMASTER))
def test_akamaster_teacher_keys_and_shapes(depth):
  path = (paths.shared_dir() / "teachers" / "cifar10_resnet_akamaster"
          / _AKAMASTER[depth])
  if not path.is_file():
    pytest.skip(f"{path} not available")
  state_dict = torch_checkpoint.load_torch_state_dict(str(path))
  blocks = (depth - 2) // 6
  bn = ("weight", "bias", "running_mean", "running_var")
  expected = {"conv1.weight": (16, 3, 3, 3)}
  expected.update({f"bn1.{leaf}": (16,) for leaf in bn})
  for stage, width in enumerate((16, 32, 64), start=1):
    for i in range(blocks):
      in_width = width if i or stage == 1 else width // 2
      prefix = f"layer{stage}.{i}"
      expected[f"{prefix}.conv1.weight"] = (width, in_width, 3, 3)
      expected.update({f"{prefix}.bn1.{leaf}": (width,) for leaf in bn})
      expected[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
      expected.update({f"{prefix}.bn2.{leaf}": (width,) for leaf in bn})
  expected.update({"linear.weight": (10, 64), "linear.bias": (10,)})
  assert {k: v.shape for k, v in state_dict.items()} == expected
  assert all(v.dtype == np.float32 for v in state_dict.values())
  assert np.all(state_dict["bn1.running_var"] > 0)
