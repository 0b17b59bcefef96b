"""VGG-16/19 with BatchNorm, CIFAR variant (one Dense on the 512-d feature)."""

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import layers

# Conv widths per stage; each stage ends with a 2x2 max-pool.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
                (512, 512, 512))
VGG19_STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class VGG(nn.Module):
  """Conv3x3-BN-ReLU stacks with max-pools, global average pool, Dense.

  On 32x32 inputs the last feature map is 1x1, so the average pool is the
  plain flatten of the CIFAR VGG; on larger inputs it keeps 512 features.
  """
  stages: tuple[tuple[int, ...], ...]
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    index = 0
    for stage in self.stages:
      for features in stage:
        x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                    kernel_init=_CONV_INIT, dtype=self.dtype,
                    name=f"conv{index}")(x)
        x = layers.batch_norm(train, self.dtype, f"bn{index}")(x)
        x = nn.relu(x)
        index += 1
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
