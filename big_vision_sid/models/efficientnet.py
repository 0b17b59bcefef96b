"""EfficientNet-Lite0 (no squeeze-excite, ReLU6, fixed stem and head).

Names mirror the `efficientnet_pytorch`-style keys of the converted TF
checkpoint without the leading underscores: `_blocks.3._depthwise_conv` is
`blocks_3/depthwise_conv`. Convs use TF "SAME" padding (more padding at the
bottom/right for even sizes), which is what the checkpoint was trained with.
"""

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import layers

# (expand_ratio, kernel, stride, out_channels, repeats) per stage.
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
                (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
                (6, 3, 1, 320, 1))

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, dtype, name: str,
          groups: int = 1):
  return nn.Conv(features, (kernel, kernel), strides=stride, padding="SAME",
                 feature_group_count=groups, use_bias=False,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


def _norm(train: bool, dtype, name: str):
  # TF's decay 0.99 / epsilon 1e-3, which the checkpoint's statistics assume.
  return layers.batch_norm(train, dtype, name, momentum=0.99, epsilon=1e-3)


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand, depthwise kxk, 1x1 linear projection."""
  expand_ratio: int
  kernel: int
  stride: int
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    in_features = x.shape[-1]
    hidden = in_features * self.expand_ratio
    y = x
    if self.expand_ratio != 1:
      y = _conv(hidden, 1, 1, self.dtype, "expand_conv")(y)
      y = nn.relu6(_norm(train, self.dtype, "bn0")(y))
    y = _conv(hidden, self.kernel, self.stride, self.dtype, "depthwise_conv",
              groups=hidden)(y)
    y = nn.relu6(_norm(train, self.dtype, "bn1")(y))
    y = _conv(self.features, 1, 1, self.dtype, "project_conv")(y)
    y = _norm(train, self.dtype, "bn2")(y)
    if self.stride == 1 and in_features == self.features:
      y = y + x
    return y


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite with stem 32 and head 1280 channels (dropout 0)."""
  num_classes: int
  stages: tuple[tuple[int, int, int, int, int], ...] = LITE0_STAGES
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _conv(32, 3, 2, self.dtype, "conv_stem")(x)
    x = nn.relu6(_norm(train, self.dtype, "bn0")(x))
    index = 0
    for expand_ratio, kernel, stride, features, repeats in self.stages:
      for i in range(repeats):
        x = MBConv(expand_ratio, kernel, stride if i == 0 else 1, features,
                   self.dtype, name=f"blocks_{index}")(x, train)
        index += 1
    x = _conv(1280, 1, 1, self.dtype, "conv_head")(x)
    x = nn.relu6(_norm(train, self.dtype, "bn1")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
