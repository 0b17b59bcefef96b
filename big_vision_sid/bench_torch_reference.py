"""PyTorch eager reference of the ResNet-56 -> ResNet-20 KD step (benchmark only).

What a user of the official PyTorch code runs per step: teacher forward in
eval mode under no_grad, student forward/backward in train mode, KL at tau=8,
Adam. Imported by `big_vision_sid.bench` only when torch is installed.
"""

import time

import torch
from torch import nn
from torch.nn import functional as F


class _Block(nn.Module):

  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0
    self.stride = stride

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x
    if self.pad:  # "Option A": subsample and zero-pad channels.
      shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
    return F.relu(out + shortcut)


class CifarResNet(nn.Module):

  def __init__(self, depth: int, num_classes: int = 10):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16)
    layers, in_planes = [], 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
      for i in range(n):
        layers.append(_Block(in_planes, planes, stride if i == 0 else 1))
        in_planes = planes
    self.layers = nn.Sequential(*layers)
    self.linear = nn.Linear(64, num_classes)

  def forward(self, x):
    out = self.layers(F.relu(self.bn1(self.conv1(x))))
    return self.linear(out.mean(dim=(2, 3)))


def make_kd_step(batch: int, temperature: float = 8.0) -> tuple[str, dict]:
  """Builds the eager KD step on synthetic data.

  Returns (device, parts): `parts` maps "teacher forward", "student
  forward+backward", "Adam update" and "step" (all three plus the KL) to
  callables that finish their work before returning.
  """
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  teacher = CifarResNet(56).to(device).eval()
  student = CifarResNet(20).to(device).train()
  optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
  images = torch.randn(batch, 3, 32, 32, device=device)

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  def teacher_logits():
    with torch.no_grad():
      return teacher(images)

  def kd_backward(logits):
    optimizer.zero_grad(set_to_none=True)
    F.kl_div(F.log_softmax(student(images) / temperature, -1),
             F.log_softmax(logits / temperature, -1),
             reduction="batchmean", log_target=True).backward()

  fixed_teacher_logits = teacher_logits()

  def teacher_forward():
    teacher_logits()
    sync()

  def student_forward_backward():
    kd_backward(fixed_teacher_logits)
    sync()

  def adam_update():
    optimizer.step()
    sync()

  def step():
    kd_backward(teacher_logits())
    optimizer.step()
    sync()

  name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
  parts = {"teacher forward": teacher_forward,
           "student forward+backward": student_forward_backward,
           "Adam update": adam_update, "step": step}
  return f"torch {name} ({torch.get_num_threads()} threads)", parts


def kd_step_images_per_sec(*, batch: int, steps: int, seconds: float,
                           temperature: float = 8.0) -> tuple[float, str]:
  """Times the eager KD step on synthetic data; returns (img/s, device)."""
  device, parts = make_kd_step(batch, temperature)
  step = parts["step"]
  for _ in range(2):
    step()
  count, start = 0, time.perf_counter()
  while count < steps or time.perf_counter() - start < seconds:
    step()
    count += 1
  return count * batch / (time.perf_counter() - start), device
