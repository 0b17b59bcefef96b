"""Penultimate features of any registered classifier, without changing it.

Every model in `models` ends with an `nn.Dense` classifier; its input is the
feature vector that patch selection clusters and the analysis plots. It is
read by intercepting that Dense call (`flax.linen.intercept_methods`), so no
model needs a feature output of its own.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def logits_and_features(model: nn.Module, variables: Any, x: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """(logits, input of the last Dense layer called) in inference mode.

  Args:
    model: a flax classifier whose last layer is an nn.Dense.
    variables: its variables.
    x: a batch of normalised inputs.

  Returns:
    float32 logits [B, C] and float32 features [B, D].

  Raises:
    ValueError: the model calls no nn.Dense.
  """
  dense_inputs = []

  def record_dense_input(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
      dense_inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record_dense_input):
    logits = model.apply(variables, x, train=False)
  if not dense_inputs:
    raise ValueError(f"{type(model).__name__} has no nn.Dense layer whose input "
                     "could serve as its features.")
  features = dense_inputs[-1].reshape(x.shape[0], -1)
  return logits.astype(jnp.float32), features.astype(jnp.float32)
