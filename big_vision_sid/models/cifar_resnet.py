"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016, section 4.2).

Layout and names follow the widely used akamaster PyTorch port, so its
pretrained teachers load leaf by leaf: `conv1`, `bn1`, `layer{1,2,3}_{i}`
with `conv1/bn1/conv2/bn2`, `linear`.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import layers

# Torch's `padding=1`: symmetric, unlike 'SAME' which pads stride-2 convs
# only on the bottom/right.
_PAD_1 = ((1, 1), (1, 1))


class BasicBlock(nn.Module):
  """Two 3x3 convs with the parameter-free "option A" shortcut."""
  planes: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    conv = functools.partial(
        nn.Conv, self.planes, (3, 3), padding=_PAD_1, use_bias=False,
        kernel_init=nn.initializers.he_normal(), dtype=self.dtype)
    norm = functools.partial(layers.batch_norm, train, self.dtype)
    y = conv(strides=self.stride, name="conv1")(x)
    y = layers.materialize(nn.relu(norm("bn1")(y)))
    y = conv(name="conv2")(y)
    y = norm("bn2")(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      pad = self.planes // 4
      shortcut = jnp.pad(
          x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (pad, pad)))
    return layers.materialize(nn.relu(y + shortcut))


class CifarResNet(nn.Module):
  """ResNet-`depth` for 32x32 inputs: widths 16/32/64, strides 1/2/2."""
  depth: int
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}.")
    blocks_per_stage = (self.depth - 2) // 6
    x = nn.Conv(16, (3, 3), padding=_PAD_1, use_bias=False,
                kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
                name="conv1")(x)
    x = layers.batch_norm(train, self.dtype, "bn1")(x)
    x = layers.materialize(nn.relu(x))
    for stage, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
      for i in range(blocks_per_stage):
        x = BasicBlock(planes, stride if i == 0 else 1, dtype=self.dtype,
                       name=f"layer{stage + 1}_{i}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="linear")(x)
    return x.astype(jnp.float32)
