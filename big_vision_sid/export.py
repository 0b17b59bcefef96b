r"""Exports a student as PyTorch-layout safetensors or a flax msgpack; sizes.

  python -m big_vision_sid.export --workdir=workdirs/r56_r20 \
      --format=safetensors [--layout=akamaster|torchvision] [--step=N] \
      [--out=DIR]

`to_torch_state_dict` is the exact inverse of the teacher converters in
`teachers.py`: akamaster's CIFAR ResNet keys (`conv1.weight`,
`layer1.0.bn1.running_mean`, `linear.weight`, no `module.` prefix) or
torchvision's ResNet keys (`downsample.0/1`), conv kernels OIHW, linear
weights [out, in], plus the `num_batches_tracked` counters torch's strict
`load_state_dict` expects. The safetensors format writes several encodings of
that state dict, each read back without torch and checked before its size is
reported:

* `dense_float32`: the state dict itself (loads into torch as is).
* `int8`: conv/linear weights as int8 with one float32 scale per output
  channel (`<key>_scale`), the grid of `compression.quantization`; everything
  else float32.
* `sparse` / `int8_sparse` (when prunable weights are zero, i.e. after
  pruning): each conv/linear weight as a bitmask of its non-zeros
  (`<key>.mask`, 1 bit per weight) plus the packed non-zero values
  (`<key>.values`), which is smaller than dense below ~97% density.

The `flax` format writes the variables as a msgpack, loadable as a teacher
(`teacher.format=flax`). Both print a size table and one machine-readable
line `RESULT {json}` with the file sizes and the parameter, prunable and
non-zero counts.
"""

import dataclasses
import json
import os
import sys
from typing import Any, Callable, Sequence

# Before JAX is imported by the modules below.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flax  # pylint: disable=g-import-not-at-top
from flax import serialization
from flax import traverse_util
import jax
import numpy as np
import safetensors
import safetensors.numpy

from big_vision_sid import teachers
from big_vision_sid import workdir as workdir_lib
from big_vision_sid.compression import pruning
from big_vision_sid.compression import quantization
from big_vision_sid.registry import Registry

USER_ERRORS = (ValueError, KeyError, FileNotFoundError)
FILE_FORMAT = "big_vision_sid.export/1"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How flax module paths name torch modules, and which converter reads them.

  Attributes:
    module_name: flax module path -> torch module name, the one
      `converter` uses.
    converter: the `teachers.CONVERTERS` format that imports this layout.
  """
  module_name: Callable[[tuple[str, ...]], str]
  converter: str


# The converters' own tables, so that export and import are inverse by
# construction. pylint: disable=protected-access
_TORCH_LEAF_NAMES = teachers._TORCH_LEAF_NAMES
LAYOUTS = Registry("export layout")
LAYOUTS.register("akamaster")(
    Layout(teachers._dotted_name, "akamaster_cifar_resnet"))
LAYOUTS.register("torchvision")(
    Layout(teachers._torchvision_resnet_name, "torchvision_resnet"))
# pylint: enable=protected-access


def _to_torch_layout(leaf_name: str, array: np.ndarray) -> np.ndarray:
  """Flax -> torch layout: conv HWIO -> OIHW, dense [in, out] -> [out, in]."""
  if leaf_name == "kernel" and array.ndim == 4:
    return array.transpose(3, 2, 0, 1)
  if leaf_name == "kernel" and array.ndim == 2:
    return array.T
  return array


def to_torch_state_dict(variables: Any, layout: str = "akamaster"
                        ) -> tuple[dict[str, np.ndarray], list[str]]:
  """The state dict that the `layout`'s converter maps back to `variables`.

  Args:
    variables: {"params", "batch_stats"} of a CNN.
    layout: a `LAYOUTS` name.

  Returns:
    (state dict of contiguous float32 arrays and int64 `num_batches_tracked`
    counters, the keys of the conv/linear weights).

  Raises:
    ValueError: a variable no torch tensor corresponds to, or two variables
      that would share a key.
  """
  module_name = LAYOUTS.get(layout).module_name
  state_dict, kernels = {}, []
  for path, leaf in traverse_util.flatten_dict(
      flax.core.unfreeze(variables)).items():
    collection, *module_path, leaf_name = path
    torch_leaf = _TORCH_LEAF_NAMES.get((collection, leaf_name))
    if torch_leaf is None:
      raise ValueError(f"Variable {'/'.join(path)} has no torch counterpart in"
                       f" the {layout} layout.")
    module = module_name(tuple(module_path))
    key = f"{module}.{torch_leaf}"
    if key in state_dict:
      raise ValueError(f"Two variables map to torch key {key} in the {layout}"
                       " layout.")
    array = np.asarray(leaf, np.float32)
    state_dict[key] = np.require(_to_torch_layout(leaf_name, array),
                                 requirements="C")
    if leaf_name == "kernel" and array.ndim in (2, 4):
      kernels.append(key)
    if (collection, leaf_name) == ("batch_stats", "mean"):
      state_dict[f"{module}.num_batches_tracked"] = np.array(0, np.int64)
  return state_dict, kernels


def from_torch_state_dict(state_dict: dict[str, np.ndarray], template: Any,
                          layout: str = "akamaster", *,
                          source: str = "export") -> dict:
  """The layout's teacher converter: torch state dict -> flax variables."""
  return teachers.CONVERTERS.get(LAYOUTS.get(layout).converter)(
      state_dict, template, model_name=f"the {layout} layout", source=source)


# ---------------------------------------------------------------------------
# Encodings: state dict -> (tensors, metadata) and back.


def _int8_encode(state_dict: dict[str, np.ndarray], kernels: list[str]
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  tensors = dict(state_dict)
  for key in kernels:
    tensors[key], tensors[f"{key}_scale"] = quantization.quantize_per_channel(
        state_dict[key], axis=0)
  return tensors, {"int8": json.dumps(kernels)}


def _sparse_encode(tensors: dict[str, np.ndarray], kernels: list[str]
                   ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  out, shapes = dict(tensors), {}
  for key in kernels:
    flat = out.pop(key).ravel()
    nonzero = flat != 0
    out[f"{key}.mask"] = np.packbits(nonzero)
    out[f"{key}.values"] = np.require(flat[nonzero], requirements="C")
    shapes[key] = list(tensors[key].shape)
  return out, {"sparse": json.dumps(shapes)}


def _combine(*encoders):
  def encode(state_dict, kernels):
    tensors, metadata = state_dict, {}
    for encoder in encoders:
      tensors, more = encoder(tensors, kernels)
      metadata.update(more)
    return tensors, metadata
  return encode


ENCODINGS = Registry("export encoding")
ENCODINGS.register("dense_float32")(lambda state_dict, kernels: (state_dict,
                                                                 {}))
ENCODINGS.register("int8")(_int8_encode)
ENCODINGS.register("sparse")(_sparse_encode)
ENCODINGS.register("int8_sparse")(_combine(_int8_encode, _sparse_encode))


def encode(state_dict: dict[str, np.ndarray], kernels: list[str],
           encoding: str, *, layout: str,
           ranges: dict[str, float] | None = None
           ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Encodes a torch state dict for a safetensors file.

  Args:
    state_dict: from `to_torch_state_dict`.
    kernels: its conv/linear weight keys (what int8 and sparse encode).
    encoding: an `ENCODINGS` name.
    layout: recorded in the metadata; also names the modules of `ranges`.
    ranges: calibrated input ranges per flax layer name
      (`quantization.calibrate`); stored as `<module>.input_scale`
      (range / 127) for an int8 deployment.

  Returns:
    (tensors, string metadata).
  """
  tensors, metadata = ENCODINGS.get(encoding)(state_dict, kernels)
  tensors = dict(tensors)
  if ranges:
    module_name = LAYOUTS.get(layout).module_name
    scales = quantization.input_scales(ranges)
    names = []
    for layer, scale in sorted(scales.items()):
      names.append(f"{module_name(tuple(layer.split('/')))}.input_scale")
      tensors[names[-1]] = np.array(scale, np.float32)
    metadata["input_scales"] = json.dumps(names)
  return tensors, {"format": FILE_FORMAT, "encoding": encoding,
                   "layout": layout, **metadata}


def decode(tensors: dict[str, np.ndarray], metadata: dict[str, str]
           ) -> dict[str, np.ndarray]:
  """The float state dict of an encoded file (int8 weights dequantised).

  Raises:
    ValueError: the file was not written by this module.
  """
  if metadata.get("format") != FILE_FORMAT:
    raise ValueError(f"Not a {FILE_FORMAT} file (metadata format"
                     f" {metadata.get('format')!r}).")
  out = dict(tensors)
  for key in json.loads(metadata.get("input_scales", "[]")):
    del out[key]
  for key, shape in json.loads(metadata.get("sparse", "{}")).items():
    mask = np.unpackbits(out.pop(f"{key}.mask"), count=int(np.prod(shape)))
    values = out.pop(f"{key}.values")
    dense = np.zeros(mask.shape, values.dtype)
    dense[mask.astype(bool)] = values
    out[key] = dense.reshape(shape)
  for key in json.loads(metadata.get("int8", "[]")):
    out[key] = quantization.dequantize_per_channel(
        out[key], out.pop(f"{key}_scale"), axis=0)
  return out


def write_safetensors(path: str, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str]) -> None:
  """Writes a safetensors file atomically."""
  data = safetensors.numpy.save(
      {k: np.require(v, requirements="C") for k, v in tensors.items()},
      metadata=metadata)
  workdir_lib.atomic_write(path, lambda f: f.write(data))


def read_safetensors(path: str
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Reads a safetensors file with numpy only: (tensors, metadata)."""
  with safetensors.safe_open(path, framework="np") as f:
    metadata = f.metadata() or {}
    return {k: f.get_tensor(k) for k in f.keys()}, metadata


# ---------------------------------------------------------------------------
# Formats: write, read back, check, measure.


def _assert_same(got: dict, want: dict, what: str) -> None:
  if sorted(got) != sorted(want):
    raise ValueError(f"{what}: read back keys differ:"
                     f" {sorted(set(got) ^ set(want))}.")
  for key, value in want.items():
    if not np.array_equal(np.asarray(got[key]), np.asarray(value)):
      raise ValueError(f"{what}: {key} reads back different values.")


def _file_entry(path: str) -> dict[str, Any]:
  return {"path": os.path.abspath(path), "bytes": os.path.getsize(path)}


def _export_flax(variables: dict, out_dir: str, *, name: str, layout: str,
                 ranges: dict[str, float] | None) -> dict[str, dict]:
  del layout, ranges  # A flax msgpack keeps flax's own layout, in float32.
  path = os.path.join(out_dir, f"{name}.msgpack")
  teachers.save_flax_teacher(path, variables)
  with open(path, "rb") as f:
    restored = serialization.msgpack_restore(f.read())
  _assert_same(traverse_util.flatten_dict(restored, sep="/"),
               traverse_util.flatten_dict(variables, sep="/"), path)
  return {"dense_float32": _file_entry(path)}


def _export_safetensors(variables: dict, out_dir: str, *, name: str,
                        layout: str, ranges: dict[str, float] | None
                        ) -> dict[str, dict]:
  state_dict, kernels = to_torch_state_dict(variables, layout)
  has_zeros = any(np.any(state_dict[k] == 0) for k in kernels)
  int8 = decode(*encode(state_dict, kernels, "int8", layout=layout))
  expected = {"dense_float32": state_dict, "int8": int8}
  if has_zeros:
    expected.update(sparse=state_dict, int8_sparse=int8)
  files = {}
  for encoding, want in expected.items():
    suffix = "" if encoding == "dense_float32" else f".{encoding}"
    path = os.path.join(out_dir, f"{name}{suffix}.safetensors")
    write_safetensors(path, *encode(state_dict, kernels, encoding,
                                    layout=layout, ranges=ranges))
    got = decode(*read_safetensors(path))
    _assert_same(got, want, path)
    files[encoding] = _file_entry(path)
    if encoding == "dense_float32":
      dense_read = got
  restored = from_torch_state_dict(dense_read, variables, layout,
                                   source=files["dense_float32"]["path"])
  _assert_same(traverse_util.flatten_dict(restored, sep="/"),
               traverse_util.flatten_dict(variables, sep="/"),
               f"{layout} conversion")
  return files


FORMATS = Registry("export format")
FORMATS.register("flax")(_export_flax)
FORMATS.register("safetensors")(_export_safetensors)


def model_counts(variables: Any) -> dict[str, Any]:
  """Parameter, non-zero and prunable (conv/dense kernel) counts."""
  counts = pruning.sparsity_stats(variables["params"])
  counts["batch_stats"] = sum(
      int(np.size(v)) for v in jax.tree.leaves(variables.get("batch_stats",
                                                             {})))
  return counts


def export_variables(variables: Any, out_dir: str, *, fmt: str,
                     layout: str = "akamaster", name: str = "student",
                     ranges: dict[str, float] | None = None
                     ) -> dict[str, Any]:
  """Writes `variables` in format `fmt`, verifies every file, measures it.

  Args:
    variables: {"params", "batch_stats"} (any arrays).
    out_dir: created if needed; files are `<name>[.<encoding>].<ext>`.
    fmt: a `FORMATS` name.
    layout: a `LAYOUTS` name (safetensors only).
    name: file name stem.
    ranges: calibrated input ranges to store in the safetensors files.

  Returns:
    {"format", "layout", "files": {encoding: {"path", "bytes"}}, and the
    `model_counts`}.

  Raises:
    KeyError: unknown format or layout.
    ValueError: a variable without a torch counterpart, or a file that does
      not read back identically.
  """
  write = FORMATS.get(fmt)
  LAYOUTS.get(layout)
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32),
                           flax.core.unfreeze(jax.device_get(variables)))
  os.makedirs(out_dir, exist_ok=True)
  files = write(variables, out_dir, name=name, layout=layout, ranges=ranges)
  return {"format": fmt, "layout": layout if fmt == "safetensors" else None,
          "files": files, **model_counts(variables)}


def size_table(result: dict[str, Any]) -> str:
  """A human-readable table of an `export_variables` result."""
  dense = result["files"]["dense_float32"]["bytes"]
  lines = [f"{'encoding':<14} {'bytes':>12} {'MiB':>8} {'vs dense':>9}  file"]
  for encoding, entry in result["files"].items():
    lines.append(
        f"{encoding:<14} {entry['bytes']:>12,} {entry['bytes'] / 2**20:>8.3f}"
        f" {entry['bytes'] / dense:>8.3f}x  {entry['path']}")
  lines.append(
      f"params {result['params']:,} (non-zero {result['nonzero']:,}),"
      f" conv/linear weights {result['prunable']:,} (non-zero"
      f" {result['prunable_nonzero']:,}, sparsity"
      f" {100 * result['sparsity']:.2f}%), batch_stats"
      f" {result['batch_stats']:,}")
  return "\n".join(lines)


def export_run(workdir: str, *, fmt: str, layout: str = "akamaster",
               out_dir: str | None = None, step: int | None = None
               ) -> dict[str, Any]:
  """Exports the student of a run's checkpoint (`workdir` is only read)."""
  FORMATS.get(fmt)
  LAYOUTS.get(layout)
  run = workdir_lib.load_run(workdir, step)
  out_dir = out_dir or os.path.join(workdir, "export")
  result = export_variables(run.variables, out_dir, fmt=fmt, layout=layout,
                            name=f"student_{run.step}")
  return {**result, "step": run.step, "model": run.config.student.name,
          "workdir": os.path.abspath(workdir)}


def _define_flags() -> Callable[[Sequence[str]], None]:
  """Defines the command-line flags; returns `main`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("workdir", None, "The trained run's directory.",
                      required=True)
  flags.DEFINE_string("format", "safetensors",
                      f"One of {', '.join(FORMATS.names())}.")
  flags.DEFINE_string("layout", "akamaster", "PyTorch key layout for"
                      f" safetensors: {', '.join(LAYOUTS.names())}.")
  flags.DEFINE_string("out", None, "Output directory; default"
                      " <workdir>/export.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  values = flags.FLAGS

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
      result = export_run(values.workdir, fmt=values.format,
                          layout=values.layout, out_dir=values.out,
                          step=values.step)
    except USER_ERRORS as e:
      message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
      print(f"error: {type(e).__name__}: {message}", file=sys.stderr,
            flush=True)
      sys.exit(1)
    print(size_table(result), flush=True)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)

  return main


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(_define_flags())
