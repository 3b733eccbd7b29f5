"""Classifiers built from a JSON-able spec: SmallCNN, PreAct ResNet-18 (width factor), All-CNN.

Every model takes uint8 images and normalises them itself (the spec carries mean/std), so weights + spec are the
whole model. `last_block` names the modules CF-k and EU-k touch: the head plus the architecture's last block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ARCHITECTURES = ("small_cnn", "preact_resnet18", "allcnn")


class Normalize(nn.Module):
    """uint8 (or [0,255] float) -> (x/255 - mean) / std, per channel."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.mean.dtype if not torch.is_floating_point(x) else x.dtype
        return (x.to(dtype) / 255.0 - self.mean.to(dtype)) / self.std.to(dtype)


class Classifier(nn.Module):
    """Normalise -> features -> linear head. Subclasses fill `features` and name their `last_block`."""

    last_block: tuple[str, ...] = ("head",)

    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.normalize = Normalize(spec["mean"], spec["std"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Classifier):
    """Two conv-BN-ReLU blocks (32, 64 channels) with pooling, then a linear head."""

    last_block = ("block2", "head")

    def __init__(self, spec: dict) -> None:
        super().__init__(spec)
        channels = spec["in_channels"]
        self.block1 = nn.Sequential(_conv_bn_relu(channels, 32), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(_conv_bn_relu(32, 64), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(64, spec["num_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)).flatten(1)


class PreActBlock(nn.Module):
    """BN-ReLU-conv, BN-ReLU-conv, with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(Classifier):
    """PreAct ResNet-18: blocks [2,2,2,2] with widths 64w, 128w, 256w, 512w."""

    last_block = ("layer4", "final_bn", "head")

    def __init__(self, spec: dict) -> None:
        super().__init__(spec)
        width = float(spec.get("width", 1.0))
        widths = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.stem = nn.Conv2d(spec["in_channels"], widths[0], 3, padding=1, bias=False)
        layers, cin = [], widths[0]
        for index, cout in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers.append(nn.Sequential(PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.final_bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, spec["num_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return torch.relu(self.final_bn(out)).mean(dim=(2, 3))


class AllCNN(Classifier):
    """conv-BN-ReLU widths 96, 96, 96/s2, 192, 192, 192/s2, 192, 192 (1x1), global average pool, linear."""

    last_block = ("block7", "block8", "head")

    def __init__(self, spec: dict) -> None:
        super().__init__(spec)
        width = float(spec.get("width", 1.0))
        c1, c2 = max(1, int(round(96 * width))), max(1, int(round(192 * width)))
        plan = [(spec["in_channels"], c1, 3, 1), (c1, c1, 3, 1), (c1, c1, 3, 2), (c1, c2, 3, 1),
                (c2, c2, 3, 1), (c2, c2, 3, 2), (c2, c2, 3, 1), (c2, c2, 1, 1)]
        for index, (cin, cout, kernel, stride) in enumerate(plan, start=1):
            setattr(self, f"block{index}", _conv_bn_relu(cin, cout, kernel, stride))
        self.head = nn.Linear(c2, spec["num_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, 9):
            x = getattr(self, f"block{index}")(x)
        return x.mean(dim=(2, 3))


_BUILDERS = {"small_cnn": SmallCNN, "preact_resnet18": PreActResNet18, "allcnn": AllCNN}


def model_spec(architecture: str, num_classes: int, image_shape: tuple[int, int, int], mean, std,
               **options) -> dict:
    """The JSON spec stored beside the weights."""
    if architecture not in _BUILDERS:
        raise ValueError(f"unknown architecture '{architecture}'; allowed are {list(ARCHITECTURES)}")
    return {
        "architecture": architecture, "num_classes": int(num_classes), "in_channels": int(image_shape[0]),
        "image_size": [int(image_shape[1]), int(image_shape[2])],
        "mean": [float(m) for m in mean], "std": [float(s) for s in std], **options,
    }


def build_model(spec: dict) -> Classifier:
    """A freshly initialised model for `spec` (weights come from the global torch RNG: seed before calling)."""
    architecture = spec.get("architecture")
    if architecture not in _BUILDERS:
        raise ValueError(f"unknown architecture '{architecture}'; allowed are {list(ARCHITECTURES)}")
    return _BUILDERS[architecture](spec)


def last_block_modules(model: Classifier) -> list[nn.Module]:
    """The modules CF-k trains and EU-k re-initialises."""
    return [getattr(model, name) for name in model.last_block]


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies, as safetensors wants them."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def load_model(spec: dict, state: dict[str, torch.Tensor]) -> Classifier:
    """Rebuild a model from its spec and weights (strict: every tensor must match)."""
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    return model


@dataclass
class ModelBundle:
    """A model as it is stored: contiguous CPU weights (safetensors) and the architecture spec (JSON). A method that
    failed has no model: `ModelBundle.of(None)` is empty (`present` is False) and the catalog stores nothing."""

    weights: dict[str, torch.Tensor] | None = None
    spec: dict | None = None

    @classmethod
    def of(cls, model: nn.Module | None) -> ModelBundle:
        return cls() if model is None else cls(state_dict_for_saving(model), model.spec)

    @property
    def present(self) -> bool:
        return bool(self.weights) and self.spec is not None

    def load(self) -> Classifier:
        """The model rebuilt from spec and weights; an empty bundle cannot be loaded."""
        if not self.present:
            raise ValueError("this bundle holds no model (the method that made it failed)")
        return load_model(self.spec, self.weights)
