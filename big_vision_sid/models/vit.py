"""Vision Transformer students (Dosovitskiy et al. 2021): CLS token, pre-LN.

ViTs have no BatchNorm, so their variables hold only 'params'.
"""

import flax.linen as nn
import jax.numpy as jnp


class EncoderBlock(nn.Module):
  """Pre-LN block: x + MHSA(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(), name="attention")(y, y)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 name="mlp_in")(y)
    y = nn.gelu(y)
    y = nn.Dense(x.shape[-1], dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 name="mlp_out")(y)
    return x + y


class ViT(nn.Module):
  """ViT classifier on the CLS token; `patch_size` may be lowered for CIFAR."""
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  num_classes: int
  patch_size: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train  # No dropout or BatchNorm: train and eval are the same.
    batch, height, width, _ = x.shape
    if height % self.patch_size or width % self.patch_size:
      raise ValueError(
          f"Image size {height}x{width} is not divisible by the patch size"
          f" {self.patch_size}.")
    x = nn.Conv(self.width, (self.patch_size, self.patch_size),
                strides=self.patch_size, padding="VALID", dtype=self.dtype,
                name="embedding")(x)
    x = x.reshape(batch, -1, self.width)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
    x = jnp.concatenate(
        [jnp.broadcast_to(cls, (batch, 1, self.width)).astype(x.dtype), x],
        axis=1)
    pos_embedding = self.param(
        "pos_embedding", nn.initializers.normal(stddev=0.02),
        (1, x.shape[1], self.width))
    x = x + pos_embedding.astype(x.dtype)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype,
                       name=f"encoderblock_{i}")(x)
    x = nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)
    # A zero-initialised head starts every class at equal probability.
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                 dtype=self.dtype, name="head")(x[:, 0])
    return x.astype(jnp.float32)
