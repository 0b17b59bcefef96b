"""ImageNet ResNets in the torchvision layout (v1.5: stride on the 3x3 conv).

Submodule names mirror torchvision's state-dict keys (`layer1.0.conv1` is
`layer1_0/conv1`, `downsample.0/1` are `downsample_conv/downsample_bn`) so
torchvision weights convert leaf by leaf.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import layers

# torchvision initialises convs with kaiming_normal_(mode="fan_out").
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, dtype, name: str):
  # Torch pads k//2 on every side, which differs from 'SAME' at stride 2.
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=stride,
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34)."""
  planes: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = _conv(self.planes, 3, self.stride, self.dtype, "conv1")(x)
    y = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(y))
    y = layers.materialize(y)
    y = _conv(self.planes, 3, 1, self.dtype, "conv2")(y)
    y = layers.batch_norm(train, self.dtype, "bn2")(y)
    y = nn.relu(y + _shortcut(self, x, self.planes, train))
    return layers.materialize(y)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50/101)."""
  planes: int
  stride: int
  width: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = _conv(self.width, 1, 1, self.dtype, "conv1")(x)
    y = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(y))
    y = layers.materialize(y)
    y = _conv(self.width, 3, self.stride, self.dtype, "conv2")(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, "bn2")(y))
    y = layers.materialize(y)
    y = _conv(self.planes * 4, 1, 1, self.dtype, "conv3")(y)
    y = layers.batch_norm(train, self.dtype, "bn3")(y)
    y = nn.relu(y + _shortcut(self, x, self.planes * 4, train))
    return layers.materialize(y)


def _shortcut(block: nn.Module, x: jnp.ndarray, features: int,
              train: bool) -> jnp.ndarray:
  """Identity, or the 1x1 conv + BN `downsample` when the shape changes."""
  if block.stride == 1 and x.shape[-1] == features:
    return x
  x = _conv(features, 1, block.stride, block.dtype, "downsample_conv")(x)
  return layers.batch_norm(train, block.dtype, "downsample_bn")(x)


class ResNet(nn.Module):
  """torchvision ResNet; `width_per_group=128` gives wide_resnet50_2."""
  stage_sizes: tuple[int, ...]
  bottleneck: bool
  num_classes: int
  width_per_group: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _conv(64, 7, 2, self.dtype, "conv1")(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      planes = 64 * 2**stage
      for i in range(num_blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        name = f"layer{stage + 1}_{i}"
        if self.bottleneck:
          width = planes * self.width_per_group // 64
          block = Bottleneck(planes, stride, width, self.dtype, name=name)
        else:
          block = BasicBlock(planes, stride, self.dtype, name=name)
        x = block(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)


resnet18 = functools.partial(ResNet, (2, 2, 2, 2), False)
resnet34 = functools.partial(ResNet, (3, 4, 6, 3), False)
resnet50 = functools.partial(ResNet, (3, 4, 6, 3), True)
resnet101 = functools.partial(ResNet, (3, 4, 23, 3), True)
resnet50x2 = functools.partial(ResNet, (3, 4, 6, 3), True, width_per_group=128)
