"""Teacher and student networks, selected by name from `MODELS`.

Every model maps NHWC float images (already normalised) to float32 logits
`[batch, num_classes]` with `__call__(x, train=False)`; the audio CNNs map
waveforms [batch, T, 1] instead, the X3Ds clips [batch, T, H, W, 3] (an
image is a one-frame clip). `dtype` is the compute dtype; parameters
stay float32. CNN variables are {'params', 'batch_stats'}; ViTs and the
audio CNNs (GroupNorm) have only 'params'.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from big_vision_sid.models import audio_cnn
from big_vision_sid.models import cifar_resnet
from big_vision_sid.models import efficientnet
from big_vision_sid.models import resnet
from big_vision_sid.models import vgg
from big_vision_sid.models import vit
from big_vision_sid.models import wrn
from big_vision_sid.models import x3d
from big_vision_sid.registry import Registry

# Each entry is a module factory called as `factory(num_classes=, dtype=)`.
MODELS = Registry("model")

for _depth in (8, 20, 32, 44, 56, 110):
  MODELS.register(f"cifar_resnet{_depth}")(
      functools.partial(cifar_resnet.CifarResNet, _depth))
for _depth, _widen in ((16, 4), (40, 4)):
  MODELS.register(f"wrn{_depth}_{_widen}")(
      functools.partial(wrn.WideResNet, _depth, _widen))
MODELS.register("vgg16_bn")(functools.partial(vgg.VGG, vgg.VGG16_STAGES))
MODELS.register("vgg19_bn")(functools.partial(vgg.VGG, vgg.VGG19_STAGES))
MODELS.register("resnet18")(resnet.resnet18)
MODELS.register("resnet34")(resnet.resnet34)
MODELS.register("resnet50")(resnet.resnet50)
MODELS.register("resnet101")(resnet.resnet101)
MODELS.register("resnet50x2")(resnet.resnet50x2)
MODELS.register("efficientnet_lite0")(efficientnet.EfficientNetLite)
MODELS.register("vit_s16")(
    functools.partial(vit.ViT, width=384, depth=12, num_heads=6, mlp_dim=1536))
MODELS.register("vit_b16")(
    functools.partial(vit.ViT, width=768, depth=12, num_heads=12,
                      mlp_dim=3072))
MODELS.register("audio_cnn")(audio_cnn.AudioCNN)
MODELS.register("audio_cnn_x2")(functools.partial(
    audio_cnn.AudioCNN, widths=tuple(2 * w for w in audio_cnn.WIDTHS)))
# The paper's video teacher (4 frames at 160 px) and the official student,
# create_x3d(width_factor=5, depth_factor=3); x3d_tiny is for CPU smoke runs.
MODELS.register("x3d_xs")(x3d.X3D)
MODELS.register("x3d_w5_d3")(functools.partial(
    x3d.X3D, width_factor=5.0, depth_factor=3.0))
MODELS.register("x3d_tiny")(functools.partial(
    x3d.X3D, width_factor=0.5, depth_factor=0.5, head_dim_out=128,
    crop_size=32))


def build_model(name: str, num_classes: int, dtype: Any = jnp.float32,
                **overrides: Any) -> nn.Module:
  """Builds the registered model `name`.

  Args:
    name: a name from `MODELS.names()`, e.g. "cifar_resnet20".
    num_classes: size of the output logits.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    **overrides: extra module fields, e.g. `patch_size=4` for a ViT on CIFAR.

  Returns:
    An unbound flax.linen module.
  """
  return MODELS.get(name)(num_classes=num_classes, dtype=dtype, **overrides)
