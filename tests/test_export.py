"""Export: flax -> torch layout -> safetensors -> back; encodings, torch."""

import os
import subprocess
import sys
import types

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from big_vision_sid import export
from big_vision_sid import models
from big_vision_sid import teachers
from big_vision_sid.compression import pruning
from big_vision_sid.compression import quantization as quant

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_variables(name, image_size=32, seed=0):
  """Random variables of model `name` (no init compile), BN stats plausible."""
  model = models.build_model(name, 10)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, image_size, image_size, 3)))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    leaf = path[-1].key
    if leaf in ("var", "scale"):
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    if leaf in ("mean", "bias"):
      return rng.normal(0, 0.1, s.shape).astype(np.float32)
    return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(
        np.float32)

  return model, jax.tree_util.tree_map_with_path(fill,
                                                 flax.core.unfreeze(shapes))


def _flat(tree):
  return traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def _assert_identical(a, b):
  fa, fb = _flat(a), _flat(b)
  assert sorted(fa) == sorted(fb)
  for key in fa:
    assert np.asarray(fa[key]).dtype == np.asarray(fb[key]).dtype, key
    np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def _pruned(variables, sparsity=0.5):
  masks = pruning.compute_masks(variables["params"], sparsity, "global")
  return {**variables, "params": jax.tree.map(
      np.asarray, pruning.apply_masks(variables["params"], masks))}


@pytest.fixture(scope="module")
def resnet8():
  return _random_variables("cifar_resnet8")


def test_akamaster_keys_layouts_and_round_trip_through_safetensors(
    resnet8, tmp_path):
  model, variables = resnet8
  state_dict, kernels = export.to_torch_state_dict(variables, "akamaster")
  assert state_dict["conv1.weight"].shape == (16, 3, 3, 3)
  assert state_dict["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)
  assert state_dict["linear.weight"].shape == (10, 64)
  np.testing.assert_array_equal(
      state_dict["layer1.0.bn2.running_var"],
      variables["batch_stats"]["layer1_0"]["bn2"]["var"])
  np.testing.assert_array_equal(
      state_dict["layer3.0.conv2.weight"][5, 7, 0, 2],
      variables["params"]["layer3_0"]["conv2"]["kernel"][0, 2, 7, 5])
  assert state_dict["bn1.num_batches_tracked"].dtype == np.int64
  assert not any(k.startswith("module.") for k in state_dict)
  assert len(kernels) == 8 and all(k.endswith(".weight") for k in kernels)
  # 7 convs, 7 BNs with 5 entries each, the linear weight and bias.
  assert len(state_dict) == 7 + 7 * 5 + 2

  path = str(tmp_path / "r8.safetensors")
  export.write_safetensors(path, *export.encode(
      state_dict, kernels, "dense_float32", layout="akamaster"))
  tensors, metadata = export.read_safetensors(path)
  assert metadata["layout"] == "akamaster"
  restored = teachers.CONVERTERS.get("akamaster_cifar_resnet")(
      export.decode(tensors, metadata), variables, model_name="cifar_resnet8",
      source=path)
  _assert_identical(restored, variables)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  apply = jax.jit(model.apply)
  np.testing.assert_array_equal(apply(restored, x), apply(variables, x))


def test_torchvision_layout_round_trip():
  _, variables = _random_variables("resnet18", image_size=64)
  state_dict, kernels = export.to_torch_state_dict(variables, "torchvision")
  assert state_dict["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
  assert "layer2.0.downsample.1.running_mean" in state_dict
  assert state_dict["fc.weight"].shape == (10, 512)
  assert "layer2.0.downsample.0.weight" in kernels
  restored = export.from_torch_state_dict(state_dict, variables, "torchvision")
  _assert_identical(restored, variables)


def test_sparse_and_int8_encodings_decode_exactly_and_are_smaller(
    resnet8, tmp_path):
  _, variables = resnet8
  variables = _pruned(variables, 0.5)
  state_dict, kernels = export.to_torch_state_dict(variables)
  sizes = {}
  for encoding in ("dense_float32", "sparse", "int8", "int8_sparse"):
    path = str(tmp_path / f"{encoding}.safetensors")
    export.write_safetensors(path, *export.encode(
        state_dict, kernels, encoding, layout="akamaster"))
    sizes[encoding] = os.path.getsize(path)
    decoded = export.decode(*export.read_safetensors(path))
    assert sorted(decoded) == sorted(state_dict)
    if "int8" not in encoding:
      for key, value in state_dict.items():
        np.testing.assert_array_equal(decoded[key], value, err_msg=key)
    else:
      for path_ in _flat(variables["params"]):
        if path_.endswith("kernel"):
          key = path_.replace("/kernel", ".weight").replace(
              "_", ".").replace("/", ".")
          weight = state_dict[key]  # Output channels first.
          scale = np.abs(weight).reshape(len(weight), -1).max(1) / 127
          scale = scale.reshape((-1,) + (1,) * (weight.ndim - 1))
          # XLA may divide by 127 as a multiply: scales agree to an ulp.
          np.testing.assert_allclose(
              decoded[key], np.round(weight / scale) * scale, rtol=1e-6,
              atol=1e-9, err_msg=key)
  weights = sum(state_dict[k].size for k in kernels)
  other_bytes = sum(v.nbytes for k, v in state_dict.items() if k not in kernels)
  nonzero = sum(np.count_nonzero(state_dict[k]) for k in kernels)
  assert nonzero == weights - round(0.5 * weights)
  # Header and per-tensor padding aside, the payloads are what was promised.
  overhead = 8192
  assert 0 < sizes["dense_float32"] - (4 * weights + other_bytes) < overhead
  assert 0 < sizes["sparse"] - (weights / 8 + 4 * nonzero + other_bytes) < (
      overhead)
  channels = sum(state_dict[k].shape[0] for k in kernels)
  assert 0 < sizes["int8"] - (weights + 4 * channels + other_bytes) < overhead
  assert sizes["int8_sparse"] < sizes["int8"] < sizes["sparse"] < sizes[
      "dense_float32"]


def test_export_variables_writes_verifies_and_counts(resnet8, tmp_path):
  _, variables = resnet8
  pruned = _pruned(variables, 0.5)
  ranges = {"conv1": 2.54, "linear": 1.27}
  result = export.export_variables(pruned, str(tmp_path), fmt="safetensors",
                                   ranges=ranges)
  assert sorted(result["files"]) == ["dense_float32", "int8", "int8_sparse",
                                     "sparse"]
  for entry in result["files"].values():
    assert entry["bytes"] == os.path.getsize(entry["path"])
  tensors, _ = export.read_safetensors(result["files"]["int8"]["path"])
  np.testing.assert_allclose(tensors["conv1.input_scale"], 0.02, rtol=1e-6)
  np.testing.assert_allclose(tensors["linear.input_scale"], 0.01, rtol=1e-6)
  prunable = sum(v.size for k, v in _flat(pruned["params"]).items()
                 if k.endswith("kernel"))
  assert result["prunable"] == prunable
  assert result["prunable_nonzero"] == prunable - round(0.5 * prunable)
  assert result["params"] == sum(
      v.size for v in _flat(pruned["params"]).values())
  # Mean and var of BNs over 16 + 2 * (16 + 32 + 64) channels.
  assert result["batch_stats"] == 2 * 240
  table = export.size_table(result)
  assert "int8_sparse" in table and "sparsity 50.0" in table

  dense = export.export_variables(variables, str(tmp_path / "dense"),
                                  fmt="safetensors")
  assert sorted(dense["files"]) == ["dense_float32", "int8"]


def test_flax_format_loads_as_a_teacher(resnet8, tmp_path):
  _, variables = resnet8
  result = export.export_variables(variables, str(tmp_path), fmt="flax",
                                   name="r8")
  path = result["files"]["dense_float32"]["path"]
  assert path.endswith("r8.msgpack")
  teacher = teachers.load_teacher(ml_collections.ConfigDict(dict(
      name="cifar_resnet8", checkpoint=path, format="flax", mean=(0.5,) * 3,
      std=(0.25,) * 3, num_classes=10, image_size=32)))
  _assert_identical(jax.tree.map(np.asarray, teacher.variables), variables)


def test_bad_inputs_are_clear_errors(resnet8, tmp_path):
  _, variables = resnet8
  with pytest.raises(KeyError, match="Unknown export layout 'keras'"):
    export.to_torch_state_dict(variables, "keras")
  with pytest.raises(KeyError, match="Unknown export format 'onnx'"):
    export.export_variables(variables, str(tmp_path), fmt="onnx")
  _, vit = _random_variables("vit_s16", image_size=32)
  with pytest.raises(ValueError, match="has no torch counterpart"):
    export.to_torch_state_dict(vit)
  with pytest.raises(ValueError, match="Not a big_vision_sid.export/1 file"):
    export.decode({"a": np.zeros(2)}, {})


def test_export_run_names_files_by_step(monkeypatch, resnet8, tmp_path):
  _, variables = resnet8
  fake_run = types.SimpleNamespace(
      variables=variables, step=650,
      config=ml_collections.ConfigDict({"student": {"name": "cifar_resnet8"}}))
  monkeypatch.setattr(export.workdir_lib, "load_run",
                      lambda workdir, step: fake_run)
  result = export.export_run(str(tmp_path), fmt="flax")
  assert result["step"] == 650 and result["model"] == "cifar_resnet8"
  assert result["files"]["dense_float32"]["path"] == str(
      tmp_path / "export" / "student_650.msgpack")


def test_cli_reports_a_missing_workdir_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "big_vision_sid.export",
       f"--workdir={tmp_path / 'nope'}", "--format=safetensors"],
      cwd=_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: FileNotFoundError:"), proc.stderr
  assert "nope" in lines[-1]


# ---------------------------------------------------------------------------
# PyTorch: akamaster's CIFAR ResNet rebuilt here loads the export strictly.


def _torch_cifar_resnet(depth):
  torch = pytest.importorskip("torch")
  tnn, functional = torch.nn, torch.nn.functional

  class Block(tnn.Module):

    def __init__(self, in_planes, planes, stride):
      super().__init__()
      self.conv1 = tnn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(planes)
      self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(planes)
      self.pad = planes // 4 if stride != 1 or in_planes != planes else None

    def forward(self, x):
      out = functional.relu(self.bn1(self.conv1(x)))
      out = self.bn2(self.conv2(out))
      shortcut = x
      if self.pad is not None:  # Option A.
        shortcut = functional.pad(x[:, :, ::2, ::2],
                                  (0, 0, 0, 0, self.pad, self.pad))
      return functional.relu(out + shortcut)

  class Net(tnn.Module):

    def __init__(self):
      super().__init__()
      n = (depth - 2) // 6
      self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(16)
      in_planes = 16
      for stage, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
        blocks = []
        for i in range(n):
          blocks.append(Block(in_planes, planes, stride if i == 0 else 1))
          in_planes = planes
        setattr(self, f"layer{stage + 1}", tnn.Sequential(*blocks))
      self.linear = tnn.Linear(64, 10)

    def forward(self, x):
      out = functional.relu(self.bn1(self.conv1(x)))
      out = self.layer3(self.layer2(self.layer1(out)))
      out = functional.avg_pool2d(out, out.size()[3])
      return self.linear(out.view(out.size(0), -1))

  return torch, Net().eval()


def _torch_logits(torch, net, path, x):
  tensors = export.decode(*export.read_safetensors(path))
  net.load_state_dict({k: torch.from_numpy(np.array(v))
                       for k, v in tensors.items()}, strict=True)
  with torch.no_grad():
    return net(torch.from_numpy(np.array(x.transpose(0, 3, 1, 2)))).numpy()


def test_pytorch_loads_the_export_strictly_with_the_same_logits(
    resnet8, tmp_path):
  torch, net = _torch_cifar_resnet(8)
  model, variables = resnet8
  pruned = _pruned(variables, 0.5)
  result = export.export_variables(pruned, str(tmp_path), fmt="safetensors")
  x = np.asarray(jax.random.normal(jax.random.key(2), (8, 32, 32, 3)))
  torch_logits = _torch_logits(torch, net, result["files"]["dense_float32"][
      "path"], x)
  np.testing.assert_allclose(torch_logits, jax.jit(model.apply)(pruned, x),
                             atol=1e-4, rtol=1e-4)
  weights = [m.weight for m in net.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
  total = sum(w.numel() for w in weights)
  assert sum(int((w != 0).sum()) for w in weights) == total - round(
      0.5 * total)
  # The int8 export is the weight-quantised model, also in torch.
  int8_logits = _torch_logits(torch, net, result["files"]["int8_sparse"][
      "path"], x)
  want = jax.jit(quant.quantized_apply(model, None))(pruned, x)
  np.testing.assert_allclose(int8_logits, want, atol=1e-4, rtol=1e-4)
  assert np.abs(int8_logits - torch_logits).max() > 1e-4
