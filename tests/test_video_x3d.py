"""X3D: shapes, parameter counts against pytorchvideo, the state-dict importer."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from big_vision_sid import models
from big_vision_sid import teachers
from big_vision_sid.models import x3d

# pytorchvideo 0.1.5's create_x3d(input_clip_length=4, input_crop_size=160,
# ...): sum(p.numel() for p in model.parameters()), measured once with
# pytorchvideo installed. The hand formula below must give the same.
_PYTORCHVIDEO_COUNTS = {
    # X3D-XS with Kinetics' 400-class and UCF-101's 101-class head (the
    # paper's "3.2M" is the latter), width_factor=2.0, depth_factor=2.2.
    ("x3d_xs", 400): 3_794_274,
    ("x3d_xs", 101): 3_181_623,
    # The official student, width_factor=5, depth_factor=3 ("18.1M").
    ("x3d_w5_d3", 101): 18_071_143,
}
# (stem width, per stage (blocks, width, inner width, SE width), head inner
# width, head width), worked out by hand from pytorchvideo's round_width
# (multiples of 8, at least 90% of the product) and ceil(depth * factor).
_DIMS = {
    "x3d_xs": (24, [(3, 24, 54, 8), (5, 48, 108, 8), (11, 96, 216, 16),
                    (7, 192, 432, 32)], 432, 2048),
    "x3d_w5_d3": (64, [(3, 64, 144, 16), (6, 120, 270, 16),
                       (15, 240, 540, 32), (9, 480, 1080, 64)], 1080, 2048),
    # X3D(width_factor=0.5, depth_factor=0.5, head_dim_out=16).
    "tiny": (8, [(1, 8, 18, 8), (1, 16, 36, 8), (3, 24, 54, 8),
                 (2, 48, 108, 8)], 108, 16),
}
_XS_STATE_DICT_KEYS = 480  # pytorchvideo's, without num_batches_tracked.


def _hand_count(dims, num_classes):
  stem, stages, head_inner, head_out = dims
  total = 3 * stem * 9 + stem * 5 + 2 * stem  # conv_t, conv_xy, BN.
  c_in = stem
  for depth, width, inner, se in stages:
    for block in range(depth):
      total += c_in * inner + 2 * inner + 27 * inner + 2 * inner
      total += inner * width + 2 * width
      if block % 2 == 0:
        total += 2 * inner * se + se + inner
      if block == 0:  # Shortcut conv; BN only when the width changes.
        total += c_in * width + (2 * width if c_in != width else 0)
      c_in = width
  return (total + c_in * head_inner + 2 * head_inner + head_inner * head_out
          + head_out * num_classes + num_classes)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,num_classes", sorted(_PYTORCHVIDEO_COUNTS))
def test_parameter_counts_equal_pytorchvideo(name, num_classes):
  expected = _PYTORCHVIDEO_COUNTS[(name, num_classes)]
  assert _hand_count(_DIMS[name], num_classes) == expected
  model = models.build_model(name, num_classes)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 4, 160, 160, 3)))
  assert _count(variables["params"]) == expected


def test_forward_shapes_and_image_inputs():
  model = models.build_model("x3d_xs", 400)
  clip_vars = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 4, 160, 160, 3)))
  logits = jax.eval_shape(model.apply, clip_vars, jnp.zeros((2, 4, 160, 160, 3)))
  assert logits.shape == (2, 400) and logits.dtype == jnp.float32
  # The trainer initialises with an image: the same variables.
  image_vars = jax.eval_shape(model.init, jax.random.key(0),
                              jnp.zeros((1, 32, 32, 3)))
  assert (jax.tree.map(lambda a: a.shape, image_vars)
          == jax.tree.map(lambda a: a.shape, clip_vars))
  student = models.build_model("x3d_w5_d3", 101, dtype=jnp.bfloat16)
  out = jax.eval_shape(student.init_with_output, jax.random.key(0),
                       jnp.zeros((2, 4, 160, 160, 3)))[0]
  assert out.shape == (2, 101) and out.dtype == jnp.float32
  tiny = models.build_model("x3d_tiny", 7)
  # Jitted: op-by-op, the many small convolutions take seconds each.
  variables = jax.jit(tiny.init)(jax.random.key(0),
                                 jnp.zeros((1, 4, 32, 32, 3)))
  out, updates = jax.jit(lambda v, x: tiny.apply(
      v, x, train=True, mutable=["batch_stats"]))(
          variables, jnp.ones((2, 4, 32, 32, 3)))
  assert out.shape == (2, 7) and np.isfinite(np.asarray(out)).all()
  assert set(updates) == {"batch_stats"}
  with pytest.raises(ValueError, match="clips"):
    tiny.apply(variables, jnp.ones((2, 32, 3)))


# --- pytorchvideo state dicts, built here from its key names. ---


def _bn(prefix, width):
  return [(f"{prefix}.weight", (width,)), (f"{prefix}.bias", (width,)),
          (f"{prefix}.running_mean", (width,)),
          (f"{prefix}.running_var", (width,))]


def _pytorchvideo_keys(dims, num_classes):
  """(key, torch shape) of create_x3d's state dict, in its order."""
  stem, stages, head_inner, head_out = dims
  keys = [("blocks.0.conv.conv_t.weight", (stem, 3, 1, 3, 3)),
          ("blocks.0.conv.conv_xy.weight", (stem, 1, 5, 1, 1)),
          *_bn("blocks.0.norm", stem)]
  c_in = stem
  for s, (depth, width, inner, se) in enumerate(stages, start=1):
    for j in range(depth):
      p = f"blocks.{s}.res_blocks.{j}"
      if j == 0:
        keys.append((f"{p}.branch1_conv.weight", (width, c_in, 1, 1, 1)))
        if c_in != width:
          keys += _bn(f"{p}.branch1_norm", width)
      keys += [(f"{p}.branch2.conv_a.weight", (inner, c_in, 1, 1, 1)),
               *_bn(f"{p}.branch2.norm_a", inner),
               (f"{p}.branch2.conv_b.weight", (inner, 1, 3, 3, 3)),
               *_bn(f"{p}.branch2.norm_b.0", inner)]
      if j % 2 == 0:
        keys += [(f"{p}.branch2.norm_b.1.block.0.weight", (se, inner, 1, 1, 1)),
                 (f"{p}.branch2.norm_b.1.block.0.bias", (se,)),
                 (f"{p}.branch2.norm_b.1.block.2.weight", (inner, se, 1, 1, 1)),
                 (f"{p}.branch2.norm_b.1.block.2.bias", (inner,))]
      keys += [(f"{p}.branch2.conv_c.weight", (width, inner, 1, 1, 1)),
               *_bn(f"{p}.branch2.norm_c", width)]
      c_in = width
  h = f"blocks.{len(stages) + 1}"
  return keys + [(f"{h}.pool.pre_conv.weight", (head_inner, c_in, 1, 1, 1)),
                 *_bn(f"{h}.pool.pre_norm", head_inner),
                 (f"{h}.pool.post_conv.weight", (head_out, head_inner, 1, 1, 1)),
                 (f"{h}.proj.weight", (num_classes, head_out)),
                 (f"{h}.proj.bias", (num_classes,))]


def _random_state_dict(rng, dims, num_classes):
  state_dict = {}
  for key, shape in _pytorchvideo_keys(dims, num_classes):
    if key.endswith("running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif ".norm" in key and key.endswith("weight"):
      value = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 5:
      fan_in = np.prod(shape[1:])
      value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    else:
      value = rng.normal(0, 0.3, shape)
    state_dict[key] = value.astype(np.float32)
  return state_dict


def _template(model):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _convert(model, state_dict):
  return teachers.CONVERTERS.get("pytorchvideo_x3d")(
      state_dict, _template(model), model_name="x3d", source="test")


# numpy reference of create_x3d's forward pass, NCTHW like torch.


def _np_conv(x, w, stride=(1, 1, 1), groups=1, bias=None):
  kernel = w.shape[2:]
  x = np.pad(x, [(0, 0), (0, 0)] + [(k // 2, k // 2) for k in kernel])
  n, c = x.shape[:2]
  out_size = [(x.shape[2 + a] - kernel[a]) // stride[a] + 1 for a in range(3)]
  xg = x.reshape(n, groups, c // groups, *x.shape[2:])
  wg = w.reshape(groups, w.shape[0] // groups, c // groups, *kernel)
  y = 0.0
  for dt in range(kernel[0]):
    for dh in range(kernel[1]):
      for dw in range(kernel[2]):
        patch = xg[:, :, :, dt::stride[0], dh::stride[1], dw::stride[2]][
            :, :, :, :out_size[0], :out_size[1], :out_size[2]]
        y = y + np.einsum("ngcthw,goc->ngothw", patch, wg[..., dt, dh, dw])
  y = y.reshape(n, w.shape[0], *out_size)
  return y if bias is None else y + bias[None, :, None, None, None]


def _np_bn(x, sd, prefix):
  shape = (1, -1, 1, 1, 1)
  scale = sd[f"{prefix}.weight"] / np.sqrt(sd[f"{prefix}.running_var"] + 1e-5)
  return ((x - sd[f"{prefix}.running_mean"].reshape(shape)) * scale.reshape(shape)
          + sd[f"{prefix}.bias"].reshape(shape))


def _relu(x):
  return np.maximum(x, 0)


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _np_x3d(sd, dims, x, pool_kernel):
  stem, stages, _, _ = dims
  x = _np_conv(x, sd["blocks.0.conv.conv_t.weight"], (1, 2, 2))
  x = _np_conv(x, sd["blocks.0.conv.conv_xy.weight"], groups=stem)
  x = _relu(_np_bn(x, sd, "blocks.0.norm"))
  for s, (depth, _, inner, _) in enumerate(stages, start=1):
    for j in range(depth):
      p = f"blocks.{s}.res_blocks.{j}"
      stride = (1, 2, 2) if j == 0 else (1, 1, 1)
      y = _relu(_np_bn(_np_conv(x, sd[f"{p}.branch2.conv_a.weight"]), sd,
                       f"{p}.branch2.norm_a"))
      y = _np_bn(_np_conv(y, sd[f"{p}.branch2.conv_b.weight"], stride,
                          groups=inner), sd, f"{p}.branch2.norm_b.0")
      if j % 2 == 0:
        se = y.mean(axis=(2, 3, 4), keepdims=True)
        se = _relu(_np_conv(se, sd[f"{p}.branch2.norm_b.1.block.0.weight"],
                            bias=sd[f"{p}.branch2.norm_b.1.block.0.bias"]))
        se = _np_conv(se, sd[f"{p}.branch2.norm_b.1.block.2.weight"],
                      bias=sd[f"{p}.branch2.norm_b.1.block.2.bias"])
        y = y * _sigmoid(se)
      y = y * _sigmoid(y)  # Swish.
      y = _np_bn(_np_conv(y, sd[f"{p}.branch2.conv_c.weight"]), sd,
                 f"{p}.branch2.norm_c")
      shortcut = x
      if f"{p}.branch1_conv.weight" in sd:
        shortcut = _np_conv(x, sd[f"{p}.branch1_conv.weight"], stride)
        if f"{p}.branch1_norm.weight" in sd:
          shortcut = _np_bn(shortcut, sd, f"{p}.branch1_norm")
      x = _relu(shortcut + y)
  h = f"blocks.{len(stages) + 1}"
  x = _relu(_np_bn(_np_conv(x, sd[f"{h}.pool.pre_conv.weight"]), sd,
                   f"{h}.pool.pre_norm"))
  # AvgPool3d(pool_kernel, stride=1), then conv, ReLU, linear, mean.
  kt, kh, kw = pool_kernel
  size = [x.shape[2] - kt + 1, x.shape[3] - kh + 1, x.shape[4] - kw + 1]
  pooled = sum(x[:, :, t:t + size[0], i:i + size[1], j:j + size[2]]
               for t in range(kt) for i in range(kh) for j in range(kw))
  x = _relu(_np_conv(pooled / (kt * kh * kw), sd[f"{h}.pool.post_conv.weight"]))
  logits = np.einsum("ncthw,kc->nkthw", x, sd[f"{h}.proj.weight"])
  return logits.mean(axis=(2, 3, 4)) + sd[f"{h}.proj.bias"]


def _tiny_model(num_classes=5):
  return x3d.X3D(num_classes, width_factor=0.5, depth_factor=0.5,
                 head_dim_out=16, clip_length=2, crop_size=32)


@pytest.mark.parametrize("size", [32, 64])
def test_imported_state_dict_matches_numpy_reference(size):
  # 32 px: the head pools globally; 64 px: a sliding 2 x 1 x 1 pool.
  rng = np.random.default_rng(0)
  state_dict = _random_state_dict(rng, _DIMS["tiny"], 5)
  model = _tiny_model()
  variables = _convert(model, state_dict)
  x = rng.normal(size=(2, 3, 2, size, size)).astype(np.float32)
  expected = _np_x3d(state_dict, _DIMS["tiny"], x.astype(np.float64),
                     (2, 1, 1))
  actual = np.asarray(model.apply(variables, jnp.asarray(
      x.transpose(0, 2, 3, 4, 1))))
  np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-4)
  assert np.abs(expected).max() > 0.1  # Logits of substance.


def test_importer_maps_keys_layouts_and_prefixes():
  rng = np.random.default_rng(1)
  state_dict = _random_state_dict(rng, _DIMS["tiny"], 5)
  variables = _convert(_tiny_model(), state_dict)
  params, stats = variables["params"], variables["batch_stats"]
  np.testing.assert_array_equal(
      params["blocks_0"]["conv"]["conv_xy"]["kernel"],
      state_dict["blocks.0.conv.conv_xy.weight"].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(
      params["blocks_3"]["res_blocks_2"]["branch2"]["norm_b_1"]["block_0"][
          "kernel"][0, 0, 0],
      state_dict["blocks.3.res_blocks.2.branch2.norm_b.1.block.0.weight"][
          :, :, 0, 0, 0].T)
  np.testing.assert_array_equal(params["blocks_5"]["proj"]["kernel"],
                                state_dict["blocks.5.proj.weight"].T)
  np.testing.assert_array_equal(
      stats["blocks_2"]["res_blocks_0"]["branch1_norm"]["var"],
      state_dict["blocks.2.res_blocks.0.branch1_norm.running_var"])
  # Every tensor lands in exactly one leaf.
  assert _count(variables) == sum(v.size for v in state_dict.values())
  # A PyTorch Lightning checkpoint's `model.` prefix is dropped.
  lightning = _convert(_tiny_model(), {f"model.{k}": v
                                       for k, v in state_dict.items()})
  jax.tree.map(np.testing.assert_array_equal, lightning, variables)


def test_xs_state_dict_has_pytorchvideos_keys_and_mismatches_are_listed():
  keys = _pytorchvideo_keys(_DIMS["x3d_xs"], 400)
  assert len(keys) == _XS_STATE_DICT_KEYS
  state_dict = {k: np.zeros(shape, np.float32) for k, shape in keys}
  model = models.build_model("x3d_xs", 400)
  variables = _convert(model, state_dict)
  assert _count(variables["params"]) == _PYTORCHVIDEO_COUNTS[("x3d_xs", 400)]
  del state_dict["blocks.4.res_blocks.6.branch2.conv_c.weight"]
  state_dict["blocks.5.proj.weight"] = np.zeros((101, 2048), np.float32)
  with pytest.raises(ValueError) as error:
    _convert(model, state_dict)
  message = str(error.value)
  assert "blocks.4.res_blocks.6.branch2.conv_c.weight" in message
  assert "blocks.5.proj.weight checkpoint (101, 2048) vs model (400, 2048)" in (
      message)


def test_model_zoo_file_loads_as_a_teacher(tmp_path):
  torch = pytest.importorskip("torch")
  state_dict = _random_state_dict(np.random.default_rng(2), _DIMS["x3d_xs"],
                                  400)
  path = tmp_path / "X3D_XS.pyth"
  # The model zoo's layout: the state dict under 'model_state'.
  torch.save({"model_state": {k: torch.from_numpy(v)
                              for k, v in state_dict.items()}}, path)
  teacher = teachers.load_teacher(ml_collections.ConfigDict(dict(
      name="x3d_xs", format="pytorchvideo_x3d", checkpoint=str(path),
      mean=(0.45,) * 3, std=(0.225,) * 3, num_classes=400, image_size=160)))
  expected = _convert(teacher.model, state_dict)
  jax.tree.map(np.testing.assert_array_equal, teacher.variables, expected)


def test_forward_matches_pytorchvideo():
  torch = pytest.importorskip("torch")
  pv_x3d = pytest.importorskip("pytorchvideo.models.x3d")
  torch.manual_seed(0)
  for kwargs, frames, size in (
      ({}, 4, 160),
      (dict(width_factor=0.5, depth_factor=0.5, head_dim_out=32,
            input_clip_length=2, input_crop_size=64), 2, 96)):
    settings = dict(input_clip_length=4, input_crop_size=160,
                    model_num_class=11, head_activation=None, dropout_rate=0.0)
    settings.update(kwargs)
    reference = pv_x3d.create_x3d(**settings).eval()
    with torch.no_grad():
      for key, value in reference.state_dict().items():
        if key.endswith(("running_mean", "proj.weight")):
          value.copy_(torch.randn_like(value) * 0.1)
        elif key.endswith("running_var"):
          value.copy_(torch.rand_like(value) + 0.5)
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()
                  if not k.endswith("num_batches_tracked")}
    model = x3d.X3D(11, width_factor=settings.get("width_factor", 2.0),
                    depth_factor=settings.get("depth_factor", 2.2),
                    head_dim_out=settings.get("head_dim_out", 2048),
                    clip_length=settings["input_clip_length"],
                    crop_size=settings["input_crop_size"])
    variables = _convert(model, state_dict)
    x = torch.randn(2, 3, frames, size, size)
    with torch.no_grad():
      expected = reference(x).numpy()
    actual = np.asarray(model.apply(variables, jnp.asarray(
        x.numpy().transpose(0, 2, 3, 4, 1))))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
