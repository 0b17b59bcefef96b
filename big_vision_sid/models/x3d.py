"""X3D (Feichtenhofer, CVPR 2020) in pytorchvideo's `create_x3d` layout.

Inputs are clips [B, T, H, W, 3] (an [B, H, W, 3] image is a one-frame clip,
so the trainer's and the teacher loader's image-shaped dummy inputs
initialise the same variables as real clips: none depends on T, H or W).

The network: a stem (1x3x3 conv with stride 2 over space, then a 5x1x1
depthwise conv over time, BatchNorm, ReLU), four stages of bottleneck blocks
(1x1x1 conv, BN, ReLU; 3x3x3 depthwise conv with stride (1, 2, 2) in a
stage's first block, BN, squeeze-excite on every other block, Swish; 1x1x1
conv, BN; plus the shortcut, then ReLU), and the head (1x1x1 conv, BN, ReLU,
average pooling, 1x1x1 conv to 2048 without BN, ReLU, dropout, dense).
Widths and depths are pytorchvideo's: `round_width(w, width_factor)` of
(12, 24, 48, 96) channels (stem_dim_in = 12, doubled per stage),
`ceil(depth_factor * d)` of (1, 2, 5, 3) blocks, inner width int(2.25 * width), squeeze-excite to round_width(inner, 1/16).
X3D-XS (width 2.0, depth 2.2) has 3,794,274 parameters with a 400-class
head and 3,181,623 with a 101-class head (the paper's "3.2M"); the official
student `create_x3d(width_factor=5, depth_factor=3)` has 18,071,143 with 101
classes (the paper's "18.1M", though its text says width factor 4, which
gives 12,179,193). X3D-S and X3D-M share XS's weights and differ only in
their input (13 frames at 160 px, 16 at 224).

Submodule names mirror pytorchvideo's state-dict keys with `_<index>` for
`.<index>` (`blocks.1.res_blocks.0.branch2.norm_b.1.block.0` is
`blocks_1/res_blocks_0/branch2/norm_b_1/block_0`), so its checkpoints
convert leaf by leaf (teachers.py, format 'pytorchvideo_x3d'). Like
pytorchvideo, the first block of stage 1 has a 1x1x1 shortcut conv (its
stride is 2) but no shortcut BatchNorm (its width does not change).

The head's average pool is pytorchvideo's AvgPool3d with stride 1 and kernel
(clip_length, ceil(crop_size / 32), ceil(crop_size / 32)) for the input it
was built for (4 frames at 160 px for XS): a global average there, a sliding
one on larger inputs (e.g. 182 px evaluation crops); on inputs smaller than
the kernel (which pytorchvideo refuses) the kernel shrinks to the whole
feature map.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import layers

# Blocks per stage before depth_factor; stage i is 2^i stem_dim_in wide
# before width_factor.
STAGE_DEPTHS = (1, 2, 5, 3)
# pytorchvideo initialises convs with c2_msra_fill (kaiming normal, fan out).
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_SPATIAL_STRIDE = 32


def round_width(width: float, multiplier: float, min_width: int = 8,
                divisor: int = 8) -> int:
  """pytorchvideo's `round_width`: width * multiplier to a multiple of 8."""
  if not multiplier:
    return int(width)
  width *= multiplier
  out = max(min_width, int(width + divisor / 2) // divisor * divisor)
  if out < 0.9 * width:
    out += divisor
  return int(out)


def round_repeats(repeats: int, multiplier: float) -> int:
  """pytorchvideo's `round_repeats`: ceil(multiplier * repeats)."""
  return int(math.ceil(multiplier * repeats)) if multiplier else repeats


def _conv(features: int, kernel: tuple[int, int, int], dtype: Any, name: str,
          stride: tuple[int, int, int] = (1, 1, 1), groups: int = 1,
          bias: bool = False) -> nn.Conv:
  # Torch pads k // 2 on both sides, which differs from 'SAME' at stride 2.
  return nn.Conv(features, kernel, strides=stride,
                 padding=tuple((k // 2, k // 2) for k in kernel),
                 feature_group_count=groups, use_bias=bias,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


def swish(x: jnp.ndarray) -> jnp.ndarray:
  return x * nn.sigmoid(x)


class SqueezeExcite(nn.Module):
  """fvcore's SqueezeExcitation: x * sigmoid(W2 relu(W1 mean(x) + b1) + b2)."""
  reduced: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    s = nn.relu(_conv(self.reduced, (1, 1, 1), self.dtype, "block_0",
                      bias=True)(s))
    s = _conv(x.shape[-1], (1, 1, 1), self.dtype, "block_2", bias=True)(s)
    return x * nn.sigmoid(s)


class Bottleneck(nn.Module):
  """conv_a 1x1x1 -> conv_b 3x3x3 depthwise (+ SE) -> conv_c 1x1x1."""
  inner: int
  features: int
  stride: int
  se_reduced: int  # 0: no squeeze-excite.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = lambda name: layers.batch_norm(train, self.dtype, name)
    y = _conv(self.inner, (1, 1, 1), self.dtype, "conv_a")(x)
    y = nn.relu(norm("norm_a")(y))
    y = _conv(self.inner, (3, 3, 3), self.dtype, "conv_b",
              stride=(1, self.stride, self.stride), groups=self.inner)(y)
    y = norm("norm_b_0")(y)
    if self.se_reduced:
      y = SqueezeExcite(self.se_reduced, self.dtype, name="norm_b_1")(y)
    y = swish(y)
    y = _conv(self.features, (1, 1, 1), self.dtype, "conv_c")(y)
    return norm("norm_c")(y)


class ResBlock(nn.Module):
  """relu(shortcut(x) + bottleneck(x)), pytorchvideo's ResBlock."""
  inner: int
  features: int
  stride: int
  se_reduced: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = Bottleneck(self.inner, self.features, self.stride, self.se_reduced,
                   self.dtype, name="branch2")(x, train)
    shortcut = x
    widens = x.shape[-1] != self.features
    if widens or self.stride > 1:
      shortcut = _conv(self.features, (1, 1, 1), self.dtype, "branch1_conv",
                       stride=(1, self.stride, self.stride))(x)
      if widens:
        shortcut = layers.batch_norm(train, self.dtype, "branch1_norm")(
            shortcut)
    return layers.materialize(nn.relu(shortcut + y))


class Stem(nn.Module):
  """Spatial 1x3x3 conv (stride 2), temporal 5x1x1 depthwise conv, BN, ReLU.

  pytorchvideo calls the spatial conv `conv_t` and the temporal one
  `conv_xy` (its Conv2plus1d's argument names); the names follow the keys.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _Conv2plus1d(self.features, self.dtype, name="conv")(x)
    return nn.relu(layers.batch_norm(train, self.dtype, "norm")(x))


class _Conv2plus1d(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _conv(self.features, (1, 3, 3), self.dtype, "conv_t",
              stride=(1, 2, 2))(x)
    return _conv(self.features, (5, 1, 1), self.dtype, "conv_xy",
                 groups=self.features)(x)


class Stage(nn.Module):
  """`depth` ResBlocks; the first strides space by 2; SE on even indices."""
  depth: int
  inner: int
  features: int
  se_ratio: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    reduced = round_width(self.inner, self.se_ratio) if self.se_ratio else 0
    for i in range(self.depth):
      x = ResBlock(self.inner, self.features, 2 if i == 0 else 1,
                   reduced if i % 2 == 0 else 0, self.dtype,
                   name=f"res_blocks_{i}")(x, train)
    return x


class Head(nn.Module):
  """ProjectedPool (conv, BN, ReLU, avg pool, conv, ReLU) + dropout + dense."""
  num_classes: int
  inner: int
  features: int
  pool_kernel: tuple[int, int, int]
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _Pool(self.inner, self.features, self.pool_kernel, self.dtype,
              name="pool")(x, train)
    # The dense layer is affine, so averaging its per-position outputs (as
    # pytorchvideo's output pool does) equals classifying the mean feature.
    x = jnp.mean(x, axis=(1, 2, 3))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype,
                    kernel_init=nn.initializers.normal(0.01), name="proj")(x)


class _Pool(nn.Module):
  inner: int
  features: int
  pool_kernel: tuple[int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _conv(self.inner, (1, 1, 1), self.dtype, "pre_conv")(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, "pre_norm")(x))
    kernel = tuple(min(k, n) for k, n in zip(self.pool_kernel, x.shape[1:4]))
    x = nn.avg_pool(x, kernel, strides=(1, 1, 1), padding="VALID")
    x = _conv(self.features, (1, 1, 1), self.dtype, "post_conv")(x)
    return nn.relu(x)


class X3D(nn.Module):
  """X3D with pytorchvideo's `create_x3d` arguments of the same names.

  Attributes:
    num_classes: logits.
    width_factor: channel expansion (XS: 2.0; the official student: 5.0).
    depth_factor: block-count expansion (XS: 2.2; the official student: 3.0).
    bottleneck_factor: inner width of a block over its output width.
    stem_dim_in: stem width before expansion.
    se_ratio: squeeze-excite width over the inner width (0: none).
    head_dim_out: width of the head's last conv.
    clip_length, crop_size: the input the head's pool kernel is sized for.
    dropout_rate: before the classifier, in training only (draws from the
      'dropout' rng); pytorchvideo's default is 0.5, the paper's student 0.
    dtype: compute dtype; parameters stay float32.
  """
  num_classes: int
  width_factor: float = 2.0
  depth_factor: float = 2.2
  bottleneck_factor: float = 2.25
  stem_dim_in: int = 12
  se_ratio: float = 0.0625
  head_dim_out: int = 2048
  clip_length: int = 4
  crop_size: int = 160
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.ndim == 4:
      x = x[:, None]
    if x.ndim != 5:
      raise ValueError(f"X3D takes clips [B, T, H, W, C], got {x.shape}.")
    x = x.astype(self.dtype)
    x = Stem(round_width(self.stem_dim_in, self.width_factor), self.dtype,
             name="blocks_0")(x, train)
    widths = [self.stem_dim_in]
    for _ in STAGE_DEPTHS[1:]:
      widths.append(round_width(widths[-1], 2.0))
    inner = 0
    for i, (width, depth) in enumerate(zip(widths, STAGE_DEPTHS)):
      features = round_width(width, self.width_factor)
      inner = int(self.bottleneck_factor * features)
      x = Stage(round_repeats(depth, self.depth_factor), inner, features,
                self.se_ratio, self.dtype, name=f"blocks_{i + 1}")(x, train)
    side = math.ceil(self.crop_size / _SPATIAL_STRIDE)
    return Head(self.num_classes, inner, self.head_dim_out,
                (self.clip_length, side, side), self.dropout_rate, self.dtype,
                name=f"blocks_{len(STAGE_DEPTHS) + 1}")(x, train).astype(
                    jnp.float32)
