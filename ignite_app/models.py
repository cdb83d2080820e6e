"""Model registry: `convnet` (the W&B PyTorch tutorial's network), `net` (the Ignite example's, with dropout), and
any classification builder of `torchvision.models` by name (`resnet18`, `mobilenet_v3_small`, ...).

Every model takes raw pixels (uint8 or float in 0..255, shape N x C x H x W) and returns logits: normalization
(per channel) lives in the model, so training, evaluation and the exported ONNX file cannot disagree about it.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn
import torch.nn.functional as F

from ignite_app.errors import UserError

OWN_MODELS = {"convnet": "the W&B PyTorch tutorial's two-conv network (--kernels K1 K2)",
              "net": "the Ignite + W&B example's network, with dropout"}
IMAGENET_CLASSES = 1000

Floats = Union[float, Sequence[float]]


def _per_channel(values: Floats) -> list[float]:
    return [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]


class Normalize(nn.Module):
    """(pixels / 255 - mean) / std per channel, with constants kept out of the state dict (they come from the data).

    One channel gives exactly the arithmetic of the former scalar version (same float32 constants, one multiply and
    one subtract), so grayscale results are unchanged to the bit."""

    def __init__(self, mean: Floats, std: Floats) -> None:
        super().__init__()
        mean, std = _per_channel(mean), _per_channel(std)
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        self.register_buffer("scale", torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor([m / s for m, s in zip(mean, std)]).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.scale.dtype) * self.scale - self.shift


class ConvNet(nn.Module):
    """The W&B tutorial's two-conv network (its second conv's input is kernels[0], not a hard-coded 16), for any
    channel count and image size (the linear layer is sized from the two 2x2 poolings).

    Each block pools before its ReLU, where the tutorial has ReLU then pool: max and ReLU commute exactly, so the
    outputs and gradients are bit-identical (tests/test_models.py), and the ReLU runs on a 4x smaller tensor
    (bench/results.md). The state dict is the same (the parameterless modules only swap places)."""

    def __init__(self, kernels: Sequence[int] = (16, 32), num_classes: int = 10, in_channels: int = 1,
                 image_size: Sequence[int] = (28, 28)) -> None:
        super().__init__()
        k1, k2 = kernels
        height, width = image_size
        self.layer1 = nn.Sequential(nn.Conv2d(in_channels, k1, kernel_size=5, stride=1, padding=2), nn.MaxPool2d(2, 2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(k1, k2, kernel_size=5, stride=1, padding=2), nn.MaxPool2d(2, 2), nn.ReLU())
        self.fc = nn.Linear((height // 4) * (width // 4) * k2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(x))
        return self.fc(x.flatten(1))


class Net(nn.Module):
    """The Ignite + W&B example's network; returns logits (its log_softmax folds into the cross-entropy loss)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: Sequence[int] = (28, 28)) -> None:
        super().__init__()
        height, width = (((s - 4) // 2 - 4) // 2 for s in image_size)  # two 5x5 convs, each followed by a 2x2 pool
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(20 * height * width, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


class Classifier(nn.Module):
    """Normalization followed by a backbone: what is trained, checkpointed and exported."""

    def __init__(self, backbone: nn.Module, mean: Floats, std: Floats) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(pixels))


# ---------------------------------------------------------------- torchvision


def torchvision_models() -> list[str]:
    """The classification builders of torchvision.models (detection, segmentation, video... are submodules)."""
    from torchvision import models

    return models.list_models(module=models)


def describe_models() -> str:
    """The text of `train.py --list-models`."""
    lines = ["Networks --model accepts:"]
    lines += [f"  {name:<20} {text}" for name, text in OWN_MODELS.items()]
    names = torchvision_models()
    lines.append(f"torchvision classification models ({len(names)}; head sized to the dataset's classes, first "
                 "convolution to its channels; --pretrained starts from torchvision's weights):")
    width = max(len(n) for n in names) + 2
    per_line = max(1, 100 // width)
    for i in range(0, len(names), per_line):
        lines.append("  " + "".join(n.ljust(width) for n in names[i : i + per_line]).rstrip())
    return "\n".join(lines)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution `in_channels` inputs; pretrained RGB filters are summed for grayscale, repeated and
    rescaled otherwise, so a pretrained stem still responds to the same patterns."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        weight = conv.weight.sum(1, keepdim=True) if in_channels == 1 else (
            conv.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _replace(model, name, new)


def _resize_head(model: nn.Module, num_classes: int) -> None:
    """Replace every ImageNet classifier layer (a Linear, or squeezenet's 1x1 Conv2d, with 1000 outputs; inception's
    auxiliary head too) by one with `num_classes` outputs."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES:
            _replace(model, name, nn.Linear(module.in_features, num_classes, bias=module.bias is not None))
        elif isinstance(module, nn.Conv2d) and module.out_channels == IMAGENET_CLASSES:
            _replace(model, name, nn.Conv2d(module.in_channels, num_classes, module.kernel_size, module.stride,
                                            module.padding))


def build_torchvision(name: str, num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    from torchvision import models

    if not pretrained:
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("inception_v3", "googlenet") else {}
        model = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    else:
        try:
            weights = models.get_model_weights(name).DEFAULT
            model = models.get_model(name, weights=weights)
        except Exception as exc:  # noqa: BLE001 - urllib, hash mismatch, no weights: all the same for the user
            raise UserError(
                f"--pretrained: could not get torchvision's pretrained weights for {name} ({type(exc).__name__}: "
                f"{str(exc)[:200]}). They are downloaded once into ~/.cache/torch/hub/checkpoints (or $TORCH_HOME); "
                "run once with internet access, copy the file there, or train from scratch without --pretrained."
            ) from None
        if getattr(model, "AuxLogits", None) is not None:
            model.aux_logits, model.AuxLogits = False, None
        if getattr(model, "aux1", None) is not None:
            model.aux_logits, model.aux1, model.aux2 = False, None, None
        _resize_head(model, num_classes)
    _adapt_first_conv(model, in_channels)
    return model


def _check_fits(backbone: nn.Module, name: str, in_channels: int, image_size: Sequence[int]) -> None:
    """One image through the network (eval mode, no gradient, no RNG), so a size it cannot take is a clear error
    now rather than a shape error in the first iteration."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, in_channels, *image_size))
    except Exception as exc:  # noqa: BLE001 - shape errors come as RuntimeError, ValueError, AssertionError...
        raise UserError(
            f"--model {name} cannot take {in_channels} x {image_size[0]} x {image_size[1]} images ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Pass a larger --image-size (e.g. 32, or 224 for "
            "vision transformers), or pick another --model."
        ) from None
    finally:
        backbone.train(was_training)


def build_model(name: str, kernels: Sequence[int], num_classes: int, mean: Floats, std: Floats, in_channels: int = 1,
                image_size: Sequence[int] = (28, 28), pretrained: bool = False, channels_last: bool = False) -> Classifier:
    """The named network behind `Normalize`; `channels_last` stores its 4-d weights NHWC, oneDNN's fast layout on
    CPUs (convolutions then produce NHWC activations, and max-pooling gets 4x faster); it changes the last bits of
    the results against NCHW, not their reproducibility."""
    image_size = tuple(image_size)
    if name == "convnet":
        backbone: nn.Module = ConvNet(kernels, num_classes, in_channels, image_size)
        if min(image_size) < 4:
            raise UserError(f"--model convnet needs images of at least 4 x 4 pixels, got {image_size}; raise --image-size.")
    elif name == "net":
        if min(image_size) < 16:
            raise UserError(f"--model net needs images of at least 16 x 16 pixels, got {image_size}; raise --image-size.")
        backbone = Net(num_classes, in_channels, image_size)
    elif name in torchvision_models():
        backbone = build_torchvision(name, num_classes, in_channels, pretrained)
        _check_fits(backbone, name, in_channels, image_size)
    else:
        check_model_name(name)
    model = Classifier(backbone, mean, std)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def check_model_name(name: str) -> None:
    """A --model that names no network is a clear error before the data is read or anything is written."""
    if name not in OWN_MODELS and name not in torchvision_models():
        raise UserError(f"--model {name}: no such network. Choose convnet, net or a torchvision classification model "
                        "(e.g. resnet18, mobilenet_v3_small); `train.py --list-models` lists them all.")
