"""Reads `torch.save` state dicts into numpy arrays without importing torch.

Both serialisation formats are supported:

* zip (torch >= 1.6): `<archive>/data.pkl` holds the object pickle, each
  storage is a raw file `<archive>/data/<key>`, `<archive>/byteorder` says
  how its bytes are ordered (little-endian when absent).
* legacy: five consecutive pickles (magic number, protocol version, sys_info,
  the object, the list of storage keys), then for each listed key an int64
  element count followed by the storage's raw bytes.

The unpickler only resolves the handful of globals a state dict needs, so
loading a checkpoint cannot execute arbitrary code.
"""

import collections
import dataclasses
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class _StorageType:
  """Stands in for a `torch.<X>Storage` class referenced by the pickle."""
  name: str
  dtype: np.dtype


@dataclasses.dataclass
class _Storage:
  """A flat typed buffer; `data` is filled once its bytes have been read."""
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass
class _StorageView:
  """A legacy sub-range of a storage (`view_metadata` in old checkpoints)."""
  base: _Storage
  offset: int
  numel: int


@dataclasses.dataclass
class _PendingTensor:
  """A tensor whose storage bytes may not have been read yet."""
  storage: _Storage | _StorageView
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
  """Plays `torch._utils._rebuild_tensor(_v2)`; the extra args are grad info."""
  return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused_args):
  """Plays `torch._utils._rebuild_parameter`: a parameter is just its data."""
  return data


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only state-dict globals; persistent ids become `_Storage`s."""

  def __init__(self, file: BinaryIO, path: str, storages: dict[str, _Storage],
               byteorder: str):
    super().__init__(file)
    self._path = path
    self._storages = storages
    self._byteorder = byteorder

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == "torch" and name.endswith("Storage"):
      if name not in _STORAGE_DTYPES:
        raise ValueError(
            f"Unsupported storage type torch.{name} in {self._path}; supported:"
            f" {', '.join(sorted(_STORAGE_DTYPES))}.")
      dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder(self._byteorder)
      return _StorageType(name, dtype)
    raise ValueError(
        f"{self._path} references {module}.{name}, which a torch state dict"
        " does not need; refusing to unpickle it.")

  def persistent_load(self, pid: Any) -> _Storage | _StorageView:
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise ValueError(f"Unexpected persistent id {pid!r} in {self._path}.")
    # Zip format: (tag, type, key, location, numel); the legacy format adds
    # `view_metadata` = (view_key, offset, numel) or None.
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise ValueError(
          f"Unsupported storage type {storage_type!r} in {self._path}.")
    if key not in self._storages:
      self._storages[key] = _Storage(storage_type.dtype, numel)
    storage = self._storages[key]
    view_metadata = pid[5] if len(pid) > 5 else None
    if view_metadata is not None:
      _, view_offset, view_numel = view_metadata
      return _StorageView(storage, view_offset, view_numel)
    return storage


def _materialize(obj: Any, path: str) -> Any:
  """Replaces every `_PendingTensor` in a nested container by a numpy array."""
  if isinstance(obj, _PendingTensor):
    storage, offset = obj.storage, obj.offset
    if isinstance(storage, _StorageView):
      storage, offset = storage.base, storage.offset + offset
    if storage.data is None:
      raise ValueError(f"{path} is truncated: a tensor's storage is missing.")
    flat = storage.data
    extent = offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
    if min(obj.size, default=1) > 0 and extent >= flat.size:
      raise ValueError(
          f"{path}: tensor of size {obj.size} stride {obj.stride} offset"
          f" {offset} overruns its storage of {flat.size} elements.")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=obj.size,
        strides=tuple(s * itemsize for s in obj.stride))
    return np.ascontiguousarray(view, dtype=flat.dtype.newbyteorder("="))
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v, path)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, path) for v in obj)
  return obj


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
      raise ValueError(f"{path} is a zip file but holds no data.pkl.")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode().strip()
    storages = {}
    with archive.open(pickles[0]) as f:
      obj = _RestrictedUnpickler(
          f, path, storages, "<" if byteorder == "little" else ">").load()
    for key, storage in storages.items():
      raw = archive.read(f"{prefix}data/{key}")
      storage.data = np.frombuffer(raw, dtype=storage.dtype)
  return _materialize(obj, path)


class _PlainDataUnpickler(pickle.Unpickler):
  """Unpickles the legacy header pickles, which hold only builtin values."""

  def find_class(self, module: str, name: str) -> Any:
    raise pickle.UnpicklingError(f"global {module}.{name} in a header pickle")


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    try:
      magic = _PlainDataUnpickler(f).load()
    except Exception:  # Any garbage may fail in any way; the verdict is one.
      magic = None
    if magic != _LEGACY_MAGIC_NUMBER:
      raise ValueError(
          f"{path} is not a torch checkpoint (neither a zip archive nor a"
          " legacy torch.save file).")
    protocol = _PlainDataUnpickler(f).load()
    if protocol != _LEGACY_PROTOCOL_VERSION:
      raise ValueError(f"{path}: unsupported legacy protocol {protocol}.")
    sys_info = _PlainDataUnpickler(f).load()
    byteorder = "<" if sys_info.get("little_endian", True) else ">"
    storages = {}
    obj = _RestrictedUnpickler(f, path, storages, byteorder).load()
    storage_keys = _PlainDataUnpickler(f).load()
    for key in storage_keys:
      storage = storages[key]
      header = f.read(8)
      if len(header) != 8:
        raise ValueError(f"{path} is truncated in storage {key}.")
      (numel,) = struct.unpack(byteorder + "q", header)
      nbytes = numel * storage.dtype.itemsize
      raw = f.read(nbytes)
      if len(raw) != nbytes:
        raise ValueError(f"{path} is truncated in storage {key}.")
      storage.data = np.frombuffer(raw, dtype=storage.dtype)
  return _materialize(obj, path)


def load_torch_checkpoint(path: str) -> Any:
  """Loads the whole object saved by `torch.save`, tensors as numpy arrays.

  Args:
    path: a file written by `torch.save` (zip or legacy format).

  Returns:
    The saved object (dicts, lists, numbers) with tensors as numpy arrays.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: the file is not a torch checkpoint or needs unsupported types.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Torch checkpoint not found: {path}")
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Loads a torch state dict as `{name: numpy array}`.

  A top-level `state_dict`, `model` or `model_state` (pytorchvideo's model
  zoo) entry is unwrapped, the DataParallel prefix `module.` is stripped and
  BatchNorm `num_batches_tracked` counters are dropped, so the keys match
  the torch module's own parameter names.

  Args:
    path: a file written by `torch.save` (zip or legacy format).

  Returns:
    An ordered dict of numpy arrays in the checkpoint's order.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: the file is not a torch checkpoint or holds no state dict.
  """
  obj = load_torch_checkpoint(path)
  if isinstance(obj, dict):
    for wrapper_key in ("state_dict", "model", "model_state"):
      if isinstance(obj.get(wrapper_key), dict):
        obj = obj[wrapper_key]
        break
  if not isinstance(obj, dict):
    raise ValueError(
        f"{path} holds a {type(obj).__name__}, not a state dict.")
  state_dict = collections.OrderedDict()
  for key, value in obj.items():
    if key.endswith("num_batches_tracked"):
      continue
    if not isinstance(value, np.ndarray):
      raise ValueError(
          f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor.")
    state_dict[key.removeprefix("module.")] = value
  return state_dict
