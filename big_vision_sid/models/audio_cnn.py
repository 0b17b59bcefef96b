"""The keyword-spotting CNN of the paper's audio experiments (App. C.3).

After Tagliasacchi et al. (2019), as the paper describes it: the waveform's
log-Mel spectrogram (input_pipeline/audio/frontend.py, the first layer, so
teacher and student take raw audio and the train step needs no audio code),
then four blocks. In each, a temporal convolution (kernel 4 x 1 over frames)
and a frequency convolution (1 x 4 over Mel bands) read the block's input in
parallel; their outputs are concatenated and mixed by a 1 x 1 convolution,
then GroupNorm and ReLU. Between blocks: 2 x 2 max-pooling and spatial
dropout 0.2 (whole channels). Widths 24, 32, 64, 128; global max pool; one
dense layer. Each of the two parallel convolutions has the block's width;
convolutions have no bias (GroupNorm's shift follows); GroupNorm has groups
of 8 channels. 134,202 parameters with 10 classes.

Input: waveforms [B, T] or [B, T, 1] at 16 kHz, full scale 1.0 (the int16
batches divided by 32768 through the target's std); any trailing axes are
flattened into the waveform. The variables do not depend on T, so the
trainer's and the teacher loader's image-shaped dummy inputs initialise the
same variables as real clips. Dropout draws from the 'dropout' rng, which
the train step provides.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from input_pipeline.audio import frontend

WIDTHS = (24, 32, 64, 128)


def _conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2 x 2 max-pooling, stride 2, odd sizes padded at the end ('SAME').

  The same values as `nn.max_pool(x, (2, 2), (2, 2), 'SAME')`, as a reshape
  and a max: XLA:CPU's gradient of reduce_window (select-and-scatter) costs
  about as much as all four blocks' convolutions.
  """
  batch, height, width, channels = x.shape
  x = jnp.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)),
              constant_values=-jnp.inf)
  return x.reshape(batch, (height + 1) // 2, 2, (width + 1) // 2, 2,
                   channels).max(axis=(2, 4))


class TimeFrequencyBlock(nn.Module):
  """concat(time conv, frequency conv) -> 1 x 1 conv -> GroupNorm -> ReLU.

  The 1 x 1 convolution is linear, so mix([T x; F x]) = (mix_T T) x +
  (mix_F F) x exactly: the block runs as two convolutions with the composed
  kernels, which skips the concatenated activation and the 1 x 1 pass (5x
  fewer FLOPs in the first block) with the same function and parameters.
  """
  width: int
  kernel_size: int
  group_size: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels, width, k = x.shape[-1], self.width, self.kernel_size
    init = nn.initializers.lecun_normal()  # nn.Conv's default.
    time = self.param("time", init, (k, 1, channels, width), jnp.float32)
    freq = self.param("freq", init, (1, k, channels, width), jnp.float32)
    mix = self.param("mix", init, (1, 1, 2 * width, width), jnp.float32)
    y = (_conv(x, jnp.einsum("hwcm,mo->hwco", time, mix[0, 0, :width]))
         + _conv(x, jnp.einsum("hwcm,mo->hwco", freq, mix[0, 0, width:])))
    y = nn.GroupNorm(num_groups=None, group_size=self.group_size,
                     dtype=self.dtype, name="norm")(y)
    return nn.relu(y)


class AudioCNN(nn.Module):
  """Log-Mel front end + four time/frequency conv blocks + dense."""
  num_classes: int
  widths: Sequence[int] = WIDTHS
  kernel_size: int = 4
  group_size: int = 8
  dropout: float = 0.2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    waveform = x.reshape(x.shape[0], -1).astype(jnp.float32)
    # The spectrogram stays float32 whatever the compute dtype: the log of
    # small powers needs the range.
    h = frontend.log_mel(waveform)[..., None].astype(self.dtype)
    for i, width in enumerate(self.widths):
      if i:
        h = max_pool_2x2(h)
        h = nn.Dropout(self.dropout, broadcast_dims=(1, 2),
                       deterministic=not train)(h)
      h = TimeFrequencyBlock(width, self.kernel_size, self.group_size,
                             self.dtype, name=f"block{i + 1}")(h)
    h = jnp.max(h, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h).astype(
        jnp.float32)
