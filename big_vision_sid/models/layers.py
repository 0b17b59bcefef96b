"""Building blocks shared by the CNNs."""

import flax.linen as nn
import jax
import jax.numpy as jnp


def materialize(x: jnp.ndarray) -> jnp.ndarray:
  """Marks an activation that XLA should store once instead of recomputing.

  XLA:CPU otherwise re-derives a block's output inside each consumer fusion
  (BatchNorm, residual add, ReLU of up to three blocks, read from the conv
  outputs) -- most expensively inside the transposes feeding the weight
  gradient convolutions. The barrier is an identity; it only takes effect when
  XLA keeps barriers until fusion, which `big_vision_sid.perf` arranges on
  CPU-only installs (benchmarks/README.md has the measurements).
  """
  return jax.lax.optimization_barrier(x)


def _channel_sums(x: jnp.ndarray) -> jnp.ndarray:
  """Float32 sum over all but the last axis, as one matrix-vector product.

  XLA:CPU splits large reductions into unfused reduce-window trees; a GEMV
  reads the activation once at memory bandwidth (about 2x faster per
  BatchNorm, forward and backward, in benchmarks/README.md).
  """
  rows = x.reshape(-1, x.shape[-1])
  return jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows,
                 preferred_element_type=jnp.float32)


@jax.custom_vjp
def batch_norm_train(
    x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Normalises `x` by its batch statistics over all but the last axis.

  Returns `(y, mean, var)` with y in x's dtype and the (biased) float32
  statistics, which are computed as E[x^2] - E[x]^2 like flax's default.
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  count = x.size // x.shape[-1]
  x32 = x.astype(jnp.float32)
  mean = _channel_sums(x) / count
  var = jnp.maximum(_channel_sums(x32 * x32) / count - mean * mean, 0.0)
  inv = jax.lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * (inv * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv, scale)


def _batch_norm_train_bwd(residuals, cotangents):
  x, mean, inv, scale = residuals
  dy, dmean, dvar = cotangents
  count = x.size // x.shape[-1]
  x32 = x.astype(jnp.float32)
  dy32 = dy.astype(jnp.float32)
  dbias = _channel_sums(dy)
  # sum(dy * xhat) with xhat = (x - mean) * inv, without materialising xhat.
  dscale = inv * (_channel_sums(dy32 * x32) - mean * dbias)
  centered = x32 - mean
  dx = (scale * inv) * (
      dy32 - dbias / count - centered * (inv * dscale / count))
  # The returned statistics feed the running averages; their cotangents are
  # zero in training but are honoured so the VJP is exact.
  dx = dx + dmean / count + centered * (2.0 * dvar / count)
  return dx.astype(x.dtype), dscale, dbias, None


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm` over the last axis, with CPU-friendly statistics.

  Same variables ({'params': scale, bias}, {'batch_stats': mean, var}), same
  running-average update and the same numerics up to summation order, so
  checkpoints and converted teachers are interchangeable with nn.BatchNorm.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,),
                            jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,),
                           jnp.float32)
    x = x.astype(self.dtype)
    if self.use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
      y = (x.astype(jnp.float32) - ra_mean.value) * (inv * scale) + bias
      return y.astype(self.dtype)
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def batch_norm(train: bool, dtype: jnp.dtype, name: str, **kwargs) -> BatchNorm:
  """BatchNorm on batch statistics when `train`, else on the running ones."""
  return BatchNorm(use_running_average=not train, dtype=dtype, name=name,
                   **kwargs)
