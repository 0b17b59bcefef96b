"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), pre-activation blocks."""

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import layers

_PAD_1 = ((1, 1), (1, 1))
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3 twice; a 1x1 conv shortcut when the shape changes."""
  features: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    activated = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    activated = layers.materialize(activated)
    y = nn.Conv(self.features, (3, 3), self.stride, padding=_PAD_1,
                use_bias=False, kernel_init=_CONV_INIT, dtype=self.dtype,
                name="conv1")(activated)
    y = nn.relu(layers.batch_norm(train, self.dtype, "bn2")(y))
    y = layers.materialize(y)
    y = nn.Conv(self.features, (3, 3), padding=_PAD_1, use_bias=False,
                kernel_init=_CONV_INIT, dtype=self.dtype, name="conv2")(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      return layers.materialize(x + y)
    # The projection sees the pre-activated input, as in the reference WRN.
    shortcut = nn.Conv(self.features, (1, 1), self.stride, padding="VALID",
                       use_bias=False, kernel_init=_CONV_INIT,
                       dtype=self.dtype, name="shortcut_conv")(activated)
    return layers.materialize(shortcut + y)


class WideResNet(nn.Module):
  """WRN-`depth`-`widen_factor`: (depth-4)/6 blocks per stage, dropout 0."""
  depth: int
  widen_factor: int
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if (self.depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n+4, got {self.depth}.")
    blocks_per_stage = (self.depth - 4) // 6
    x = nn.Conv(16, (3, 3), padding=_PAD_1, use_bias=False,
                kernel_init=_CONV_INIT, dtype=self.dtype, name="conv1")(x)
    for stage, stride in enumerate((1, 2, 2)):
      features = 16 * 2**stage * self.widen_factor
      for i in range(blocks_per_stage):
        x = PreActBlock(features, stride if i == 0 else 1, self.dtype,
                        name=f"block{stage + 1}_{i}")(x, train)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
