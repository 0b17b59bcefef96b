"""Int8 fake quantisation for any flax model: calibration, PTQ and QAT.

Every `nn.Conv`, `nn.Dense` and `nn.DenseGeneral` call is intercepted
(`flax.linen.intercept_methods`), so models need no quantisation code: the
layer's input is fake-quantised per tensor with a calibrated range and its
kernel per output channel, symmetrically, to `bits` bits (int8: integers in
[-127, 127] times a float scale). Fake quantisation uses a straight-through
estimator, so the same `quantized_apply` serves post-training quantisation
(calibrate, then evaluate) and quantisation-aware fine-tuning (train through
it; activation ranges stay fixed at their calibrated values, weight scales
follow the weights).

BatchNorm is not folded into the convolutions, and need not be: with
per-output-channel symmetric weight scales, folding commutes with weight
quantisation (fq(w * c) = c * fq(w) channel by channel for the BN factor
c = gamma / sqrt(var + eps), |c| scaling both the weights and their scale),
and the next layer's input is quantised after BN, ReLU and the residual add
as a deployed int8 network requantises it. The simulated network thus equals
the BN-folded int8 one up to the int32 rounding of the folded bias, while
training keeps batch statistics exactly as in float training. Activations use
symmetric signed ranges even after a ReLU, which spends one bit of the
deployed (unsigned) encoding: a conservative estimate of the int8 error.
"""

import functools
from typing import Any, Callable, Iterable

import flax
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

QUANTIZED_MODULES = (nn.Conv, nn.Dense, nn.DenseGeneral)
CALIBRATION_METHODS = ("max", "percentile")
_STATS = "quant_stats"


def qmax(bits: int) -> int:
  """Largest integer of a symmetric `bits`-bit grid (127 for int8)."""
  return 2 ** (bits - 1) - 1


def _quantize(x: jnp.ndarray, scale: jnp.ndarray, bits: int) -> jnp.ndarray:
  """round(x / scale) clipped to [-qmax, qmax], as floats (0 where scale=0)."""
  safe = jnp.where(scale > 0, scale, 1.0)
  return jnp.clip(jnp.round(x / safe), -qmax(bits), qmax(bits))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def fake_quant(x: jnp.ndarray, scale: jnp.ndarray, bits: int = 8
               ) -> jnp.ndarray:
  """Rounds `x` to the grid `scale * k`, |k| <= qmax(bits), in x's dtype.

  The gradient is the straight-through estimator: 1 for |x| inside the
  clipping range qmax * scale, 0 outside; `scale` gets no gradient.

  Args:
    x: values to quantise.
    scale: grid step, broadcastable to x (a scalar, or per channel over the
      last axes); 0 maps everything to 0.
    bits: grid width (8 for int8).
  """
  return (_quantize(x, scale, bits) * scale).astype(x.dtype)


def _fake_quant_fwd(x, scale, bits):
  return fake_quant(x, scale, bits), (x, scale)


def _fake_quant_bwd(bits, residuals, g):
  x, scale = residuals
  inside = jnp.abs(x) <= qmax(bits) * scale
  return jnp.where(inside, g, jnp.zeros((), g.dtype)), jnp.zeros_like(scale)


fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def channel_scales(kernel: jnp.ndarray, bits: int = 8,
                   num_out_axes: int = 1) -> jnp.ndarray:
  """Per-output-channel scales max|w| / qmax of a flax kernel.

  Args:
    kernel: conv HWIO or dense [in, out] (output channels last).
    bits: grid width.
    num_out_axes: trailing output axes (>1 for a DenseGeneral such as the
      [in, heads, head_dim] attention projections).

  Returns:
    Scales of shape kernel.shape[-num_out_axes:].
  """
  axes = tuple(range(kernel.ndim - num_out_axes))
  return jnp.max(jnp.abs(kernel), axis=axes) / qmax(bits)


def fake_quant_kernel(kernel: jnp.ndarray, bits: int = 8,
                      num_out_axes: int = 1) -> jnp.ndarray:
  """Per-channel fake quantisation; the scales are not differentiated."""
  scales = jax.lax.stop_gradient(channel_scales(kernel, bits, num_out_axes))
  return fake_quant(kernel, scales, bits)


def quantize_per_channel(weight: np.ndarray, axis: int = 0, bits: int = 8
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Integer weights and float32 scales, one per index of `axis`.

  Same grid as `fake_quant_kernel`: `values * scales` (broadcast along
  `axis`) reproduces the fake-quantised weights exactly.

  Args:
    weight: e.g. a torch-layout conv [O, I, kh, kw] or linear [out, in].
    axis: the output-channel axis (0 in torch's layout).
    bits: at most 8 (the values are int8).

  Returns:
    (int8 values of weight's shape, float32 scales [weight.shape[axis]]).
  """
  if not 2 <= bits <= 8:
    raise ValueError(f"int8 storage needs 2 <= bits <= 8, got {bits}.")
  moved = np.moveaxis(np.asarray(weight, np.float32), axis, -1)
  scales = np.asarray(channel_scales(jnp.asarray(moved), bits))
  values = np.asarray(_quantize(jnp.asarray(moved), jnp.asarray(scales), bits))
  return np.moveaxis(values.astype(np.int8), -1, axis), scales


def dequantize_per_channel(values: np.ndarray, scales: np.ndarray,
                           axis: int = 0) -> np.ndarray:
  """float32 values * scales broadcast along `axis`."""
  shape = [1] * values.ndim
  shape[axis] = -1
  return (values.astype(np.float32)
          * np.asarray(scales, np.float32).reshape(shape))


def _num_out_axes(module: nn.Module) -> int:
  features = getattr(module, "features", 1)
  if isinstance(module, nn.DenseGeneral) and isinstance(features, tuple):
    return len(features)
  return 1


def _layer_name(module: nn.Module) -> str:
  return "/".join(module.path)


def _is_quantized_call(context: Any) -> bool:
  return (context.method_name == "__call__"
          and isinstance(context.module, QUANTIZED_MODULES))


class _Interceptor:
  """Fake-quantises the input and kernel of each conv/dense call.

  The layer runs as a fresh copy applied to its own (fake-quantised)
  parameters; `_inside` keeps the copy's call from being intercepted again.
  """

  def __init__(self, input_scales: dict[str, Any] | None,
               quantize_weights: bool, bits: int):
    self._input_scales = input_scales
    self._quantize_weights = quantize_weights
    self._bits = bits
    self._inside = False

  def __call__(self, next_fun, args, kwargs, context):
    module = context.module
    if (self._inside or not _is_quantized_call(context)
        or module.is_initializing()):
      return next_fun(*args, **kwargs)
    x, *rest = args
    if self._input_scales is not None:
      name = _layer_name(module)
      if name not in self._input_scales:
        raise ValueError(
            f"No calibrated input range for layer {name}; calibrate this"
            f" model first (known layers: {sorted(self._input_scales)}).")
      x = fake_quant(x, jnp.asarray(self._input_scales[name], jnp.float32),
                     self._bits)
    if not self._quantize_weights:
      return next_fun(x, *rest, **kwargs)
    params = dict(module.variables["params"])
    params["kernel"] = fake_quant_kernel(params["kernel"], self._bits,
                                         _num_out_axes(module))
    self._inside = True
    try:
      return module.clone(parent=None).apply({"params": params}, x, *rest,
                                             **kwargs)
    finally:
      self._inside = False


def input_scales(ranges: dict[str, float], bits: int = 8) -> dict[str, float]:
  """Per-tensor activation scales range / qmax from calibrated ranges."""
  return {name: float(r) / qmax(bits) for name, r in ranges.items()}


def quantized_apply(model: nn.Module, ranges: dict[str, float] | None, *,
                    bits: int = 8, quantize_weights: bool = True
                    ) -> Callable[..., Any]:
  """`model.apply` with every conv/dense input and kernel fake-quantised.

  Args:
    model: any flax linen model built from nn.Conv / nn.Dense /
      nn.DenseGeneral.
    ranges: calibrated input range per layer (from `calibrate`); None leaves
      activations in float (weight-only quantisation).
    bits: grid width (8 for int8).
    quantize_weights: per-channel fake quantisation of the kernels.

  Returns:
    A function with `model.apply`'s signature (variables, *args, **kwargs,
    including mutable=...); jittable and differentiable (STE), so it can
    replace `model.apply` in a train step for quantisation-aware training.
  """
  scales = None if ranges is None else input_scales(ranges, bits)

  def apply(variables, *args, **kwargs):
    with nn.intercept_methods(_Interceptor(scales, quantize_weights, bits)):
      return model.apply(variables, *args, **kwargs)

  return apply


def _record_input(method: str, percentile: float):
  def interceptor(next_fun, args, kwargs, context):
    if _is_quantized_call(context) and not context.module.is_initializing():
      magnitudes = jnp.abs(args[0]).astype(jnp.float32)
      value = (jnp.max(magnitudes) if method == "max"
               else jnp.percentile(magnitudes, percentile))
      context.module.sow(_STATS, "input_range", value)
    return next_fun(*args, **kwargs)
  return interceptor


def calibrate(model: nn.Module, variables: Any, batches: Iterable[Any], *,
              method: str = "max", percentile: float = 99.99,
              **apply_kwargs: Any) -> dict[str, float]:
  """Input ranges of every conv/dense layer over calibration batches.

  Args:
    model: the float model.
    variables: its variables (evaluated as given, e.g. with train=False).
    batches: iterable of model inputs (e.g. normalised patches).
    method: "max" takes the largest |input| over all batches; "percentile"
      the mean over batches of each batch's `percentile`-th percentile of
      |input| (exact for a single batch), which ignores rare outliers.
    percentile: in (0, 100], for method "percentile".
    **apply_kwargs: passed to `model.apply` (e.g. train=False).

  Returns:
    Layer name ("layer1_0/conv1") -> range, as Python floats (JSON-ready).

  Raises:
    ValueError: unknown method, bad percentile, no batches, or a model
      without conv/dense layers.
  """
  if method not in CALIBRATION_METHODS:
    raise ValueError(f"Unknown calibration method '{method}'. Known:"
                     f" {CALIBRATION_METHODS}.")
  if not 0 < percentile <= 100:
    raise ValueError(f"percentile must be in (0, 100], got {percentile}.")

  @jax.jit
  def batch_stats(variables, x):
    with nn.intercept_methods(_record_input(method, percentile)):
      _, stats = model.apply(variables, x, mutable=[_STATS], **apply_kwargs)
    return stats[_STATS]

  per_batch = []
  for x in batches:
    flat = traverse_util.flatten_dict(
        flax.core.unfreeze(batch_stats(variables, x)))
    # A layer called several times sows a tuple: its widest call counts.
    per_batch.append({"/".join(path[:-1]): float(np.max(np.asarray(v)))
                      for path, v in flat.items()})
  if not per_batch:
    raise ValueError("calibrate needs at least one batch.")
  if not per_batch[0]:
    raise ValueError("The model has no nn.Conv / nn.Dense layer to quantise.")
  reduce = np.max if method == "max" else np.mean
  return {name: float(reduce([b[name] for b in per_batch]))
          for name in per_batch[0]}
