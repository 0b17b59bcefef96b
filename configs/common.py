"""Building blocks shared by the experiment configs."""

import ml_collections
from ml_collections import config_dict

from input_pipeline import config as input_config

AKAMASTER_DIR = "$SID_SHARED_DIR/teachers/cifar10_resnet_akamaster"
AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models"
AKAMASTER_FILES = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_TEST = "npz:$SID_SHARED_DIR/data/cifar10/test_exact.npz"
CITY = "$SID_SHARED_DIR/images/city.jpg"
ANIMALS = "$SID_SHARED_DIR/images/animals.png"
BRIDGE = "$SID_SHARED_DIR/images/bridge.png"


def akamaster_teacher(depth: int) -> ml_collections.ConfigDict:
  """A pretrained CIFAR-10 ResNet-{20,32,44,56} (akamaster, BSD-2)."""
  filename = AKAMASTER_FILES[depth]
  return ml_collections.ConfigDict(dict(
      name=f"cifar_resnet{depth}",
      format="akamaster_cifar_resnet",
      checkpoint=f"{AKAMASTER_DIR}/{filename}",
      # Used only when `checkpoint` does not exist (a user's machine).
      url=f"{AKAMASTER_URL}/{filename}",
      mean=IMAGENET_MEAN,
      std=IMAGENET_STD,
      num_classes=10,
      image_size=32,
  ))


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; experiment files override what differs."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Steps win when both are given; epochs count passes over the fixed patch set.
  config.total_steps = config_dict.placeholder(int)
  config.total_epochs = config_dict.placeholder(float)
  config.log_every_steps = 50
  config.compute_dtype = "float32"
  # What the student matches (big_vision_sid/targets.py): "teacher" (distil
  # the frozen teacher's logits) or "labels" (supervised, labelled source).
  config.target = "teacher"

  config.input = input_config.default_input_config()

  # partner: "roll" (the batch rolled by one), "reverse" (the paper's CIFAR
  # code) or "permutation" (its ImageNet code); see big_vision_sid/mixing.py.
  config.mixing = ml_collections.ConfigDict(dict(mode="cutmix", alpha=1.0,
                                                 partner="roll"))
  config.distill = ml_collections.ConfigDict(dict(
      loss="kl", temperature=8.0,
      # The paper's code does not multiply the KL by tau^2 (big_vision's
      # distillation does); with Adam the factor only rescales the gradient.
      tau_squared=False,
      topk=5))
  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, weight_decay=0.0, momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, schedule="cosine", warmup_steps=0, end_lr_factor=0.0,
      step_boundaries=(0.5, 0.75), step_decay=0.1,
      grad_clip_norm=config_dict.placeholder(float)))
  config.eval = ml_collections.ConfigDict(dict(
      name="classification", dataset=CIFAR10_TEST, batch_size=256, image_size=32,
      every_steps=0, max_examples=0))
  # Data-free compression of the student (big_vision_sid/compression/plan.py;
  # with target="self"). The defaults compress nothing.
  config.compress = ml_collections.ConfigDict(dict(
      sparsity=0.0, scope="global", schedule="polynomial", begin_fraction=0.0,
      end_fraction=0.5, frequency=10, quantize="none",
      calibration="percentile", percentile=99.99, calibration_patches=1024,
      bn="recompute"))
  config.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=1000, every_seconds=120.0, keep=2, async_save=False))
  return config
