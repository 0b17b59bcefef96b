"""The array primitives of the patch renderer, for TensorFlow and for jax.

`renderer` writes the patch math once against an `Ops`. TF_OPS and JAX_OPS
build theirs on first use, so that importing this module imports neither
library and the jax backend never imports TensorFlow (nor tf jax).
"""

import dataclasses
import functools
from typing import Any, Callable

import input_pipeline


@dataclasses.dataclass(frozen=True)
class Ops:
  """Array primitives of one library, with numpy-like signatures.

  The elementwise and reduction ops are the library's own (so each backend
  keeps its exact float semantics). Beyond numpy:

  Attributes:
    num_rows: x -> its leading dimension (a tensor in tf graphs).
    full: (n, value, dtype) -> [n] filled with value.
    take: (params, indices) -> params[indices] (entries of a flat table).
    right_shift, bitwise_and, left_shift, bitwise_or: integer bit ops, for
      RGB packed into one int32 per pixel.
    bitcast: (x, dtype) -> x's bits as dtype; int32 [...] <-> uint8 [..., 4]
      (numpy's `view` with the byte axis made explicit).
  """
  float32: Any
  int32: Any
  uint8: Any
  bool_: Any
  asarray: Callable[..., Any]
  cast: Callable[[Any, Any], Any]
  arange: Callable[..., Any]
  meshgrid: Callable[..., Any]
  full: Callable[[Any, Any, Any], Any]
  num_rows: Callable[[Any], Any]
  reshape: Callable[[Any, Any], Any]
  concat: Callable[..., Any]
  take: Callable[[Any, Any], Any]
  floor: Callable[[Any], Any]
  round: Callable[[Any], Any]
  log: Callable[[Any], Any]
  power: Callable[[Any, Any], Any]
  minimum: Callable[[Any, Any], Any]
  maximum: Callable[[Any, Any], Any]
  clip: Callable[[Any, Any, Any], Any]
  where: Callable[[Any, Any, Any], Any]
  sum: Callable[..., Any]
  right_shift: Callable[[Any, Any], Any]
  bitwise_and: Callable[[Any, Any], Any]
  left_shift: Callable[[Any, Any], Any]
  bitwise_or: Callable[[Any, Any], Any]
  bitcast: Callable[[Any, Any], Any]


class _LazyOps:
  """An `Ops` built, importing its library, on first attribute access."""

  def __init__(self, build: Callable[[], Ops]):
    self._build = build

  @functools.cached_property
  def _ops(self) -> Ops:
    return self._build()

  def __getattr__(self, name: str) -> Any:
    if name.startswith("_"):
      raise AttributeError(name)
    return getattr(self._ops, name)


def _tf_ops() -> Ops:
  tf = input_pipeline.import_tensorflow()
  return Ops(
      float32=tf.float32, int32=tf.int32, uint8=tf.uint8, bool_=tf.bool,
      asarray=tf.convert_to_tensor, cast=tf.cast, arange=tf.range,
      meshgrid=tf.meshgrid,
      full=lambda n, value, dtype: tf.fill([n], tf.constant(value, dtype)),
      num_rows=lambda x: tf.shape(x)[0], reshape=tf.reshape,
      concat=tf.concat, take=tf.gather, floor=tf.floor, round=tf.round,
      log=tf.math.log, power=tf.pow, minimum=tf.minimum, maximum=tf.maximum,
      clip=tf.clip_by_value, where=tf.where, sum=tf.reduce_sum,
      right_shift=tf.bitwise.right_shift,
      bitwise_and=tf.bitwise.bitwise_and, left_shift=tf.bitwise.left_shift,
      bitwise_or=tf.bitwise.bitwise_or, bitcast=tf.bitcast)


def _jax_ops() -> Ops:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return Ops(
      float32=jnp.float32, int32=jnp.int32, uint8=jnp.uint8, bool_=jnp.bool_,
      asarray=jnp.asarray, cast=lambda x, dtype: jnp.asarray(x).astype(dtype),
      arange=jnp.arange, meshgrid=jnp.meshgrid,
      full=lambda n, value, dtype: jnp.full((n,), value, dtype),
      num_rows=lambda x: jnp.shape(x)[0], reshape=jnp.reshape,
      concat=jnp.concatenate,
      take=lambda params, indices: params[indices], floor=jnp.floor,
      round=jnp.round, log=jnp.log, power=jnp.power, minimum=jnp.minimum,
      maximum=jnp.maximum, clip=jnp.clip, where=jnp.where, sum=jnp.sum,
      right_shift=jnp.right_shift, bitwise_and=jnp.bitwise_and,
      left_shift=jnp.left_shift, bitwise_or=jnp.bitwise_or,
      bitcast=jax.lax.bitcast_convert_type)


TF_OPS = _LazyOps(_tf_ops)
JAX_OPS = _LazyOps(_jax_ops)
