"""Model registry: `convnet` (the W&B PyTorch tutorial's network) and `net` (the Ignite example's, with dropout).

Every model takes raw pixels (uint8 or float in 0..255, shape N x 1 x 28 x 28) and returns logits: normalization
lives in the model, so training, evaluation and the exported ONNX file cannot disagree about it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


class Normalize(nn.Module):
    """(pixels / 255 - mean) / std, with constants kept out of the state dict."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std)), persistent=False)
        self.register_buffer("shift", torch.tensor(mean / std), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.scale.dtype) * self.scale - self.shift


class ConvNet(nn.Module):
    """The W&B tutorial's two-conv network (its second conv's input is kernels[0], not a hard-coded 16).

    Each block pools before its ReLU, where the tutorial has ReLU then pool: max and ReLU commute exactly, so the
    outputs and gradients are bit-identical (tests/test_models.py), and the ReLU runs on a 4x smaller tensor
    (bench/results.md). The state dict is the same (the parameterless modules only swap places)."""

    def __init__(self, kernels: Sequence[int] = (16, 32), num_classes: int = 10) -> None:
        super().__init__()
        k1, k2 = kernels
        self.layer1 = nn.Sequential(nn.Conv2d(1, k1, kernel_size=5, stride=1, padding=2), nn.MaxPool2d(2, 2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(k1, k2, kernel_size=5, stride=1, padding=2), nn.MaxPool2d(2, 2), nn.ReLU())
        self.fc = nn.Linear(7 * 7 * k2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(x))
        return self.fc(x.flatten(1))


class Net(nn.Module):
    """The Ignite + W&B example's network; returns logits (its log_softmax folds into the cross-entropy loss)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


class Classifier(nn.Module):
    """Normalization followed by a backbone: what is trained, checkpointed and exported."""

    def __init__(self, backbone: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(pixels))


def build_model(name: str, kernels: Sequence[int], num_classes: int, mean: float, std: float,
                channels_last: bool = False) -> Classifier:
    """The named network behind `Normalize`; `channels_last` stores its 4-d weights NHWC, oneDNN's fast layout on
    CPUs (convolutions then produce NHWC activations, and max-pooling gets 4x faster); it changes the last bits of
    the results against NCHW, not their reproducibility."""
    if name == "convnet":
        backbone: nn.Module = ConvNet(kernels, num_classes)
    elif name == "net":
        backbone = Net(num_classes)
    else:
        raise ValueError(f"unknown model {name!r}; choose convnet or net")
    model = Classifier(backbone, mean, std)
    return model.to(memory_format=torch.channels_last) if channels_last else model
