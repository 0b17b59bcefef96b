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
    offset_dtype: dtype of the pyramid's level offsets.
    num_rows: x -> its leading dimension (a tensor in tf graphs).
    full: (n, value, dtype) -> [n] filled with value.
    take: (params, indices) -> params[indices] (rows of a flat table).
    select_rows: bool mask [B] -> a handle on the rows where it is true.
    gather_rows: (x, rows) -> the selected rows of x.
    scatter_rows: (x, rows, values) -> x with the selected rows set to values.
      tf really gathers, computes on and scatters back only the selected
      rows; jax (static shapes under jit) keeps every row and picks with a
      `where`.
  """
  float32: Any
  int32: Any
  uint8: Any
  bool_: Any
  offset_dtype: Any
  asarray: Callable[..., Any]
  cast: Callable[[Any, Any], Any]
  arange: Callable[..., Any]
  meshgrid: Callable[..., Any]
  full: Callable[[Any, Any, Any], Any]
  num_rows: Callable[[Any], Any]
  reshape: Callable[[Any, Any], Any]
  stack: Callable[..., Any]
  concat: Callable[..., Any]
  take: Callable[[Any, Any], Any]
  floor: Callable[[Any], Any]
  round: Callable[[Any], Any]
  log: Callable[[Any], Any]
  power: Callable[[Any, Any], Any]
  mod: Callable[[Any, Any], Any]
  minimum: Callable[[Any, Any], Any]
  clip: Callable[[Any, Any, Any], Any]
  where: Callable[[Any, Any, Any], Any]
  sum: Callable[..., Any]
  mean: Callable[..., Any]
  max: Callable[..., Any]
  min: Callable[..., Any]
  select_rows: Callable[[Any], Any]
  gather_rows: Callable[[Any, Any], Any]
  scatter_rows: Callable[[Any, Any, Any], Any]


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
      # What tf has always used; the taps are int32 in either backend.
      offset_dtype=tf.int64,
      asarray=tf.convert_to_tensor, cast=tf.cast, arange=tf.range,
      meshgrid=tf.meshgrid,
      full=lambda n, value, dtype: tf.fill([n], tf.constant(value, dtype)),
      num_rows=lambda x: tf.shape(x)[0], reshape=tf.reshape, stack=tf.stack,
      concat=tf.concat, take=tf.gather, floor=tf.floor, round=tf.round,
      log=tf.math.log, power=tf.pow, mod=tf.math.floormod,
      minimum=tf.minimum, clip=tf.clip_by_value, where=tf.where,
      sum=tf.reduce_sum, mean=tf.reduce_mean, max=tf.reduce_max,
      min=tf.reduce_min, select_rows=tf.where, gather_rows=tf.gather_nd,
      scatter_rows=tf.tensor_scatter_nd_update)


def _jax_scatter_rows(x, rows, values):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mask = rows.reshape(rows.shape + (1,) * (values.ndim - 1))
  return jnp.where(mask, values, x)


def _jax_ops() -> Ops:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return Ops(
      float32=jnp.float32, int32=jnp.int32, uint8=jnp.uint8, bool_=jnp.bool_,
      offset_dtype=jnp.int32,
      asarray=jnp.asarray, cast=lambda x, dtype: jnp.asarray(x).astype(dtype),
      arange=jnp.arange, meshgrid=jnp.meshgrid,
      full=lambda n, value, dtype: jnp.full((n,), value, dtype),
      num_rows=lambda x: jnp.shape(x)[0], reshape=jnp.reshape,
      stack=jnp.stack, concat=jnp.concatenate,
      take=lambda params, indices: params[indices], floor=jnp.floor,
      round=jnp.round, log=jnp.log, power=jnp.power, mod=jnp.mod,
      minimum=jnp.minimum, clip=jnp.clip, where=jnp.where, sum=jnp.sum,
      mean=jnp.mean, max=jnp.max, min=jnp.min,
      select_rows=lambda mask: mask, gather_rows=lambda x, rows: x,
      scatter_rows=_jax_scatter_rows)


TF_OPS = _LazyOps(_tf_ops)
JAX_OPS = _LazyOps(_jax_ops)
