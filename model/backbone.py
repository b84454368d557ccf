"""ResNet-18/50/101 and ResNeXt body (torchvision parameter names) with frozen BN, BN or GroupNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrozenBatchNorm2d", "make_norm", "ResNetBody", "freeze_backbone_layers"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all buffers (no gradients)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:  # [B,C,H,W] -> [B,C,H,W]
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"




def make_norm(kind: str, channels: int, eps: float = 1e-5) -> nn.Module:
    """"frozen_bn" | "bn" | "gn" (32 groups) normalisation layer over `channels`."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "gn":
        return nn.GroupNorm(32, channels)
    raise ValueError(f"unknown norm {kind!r}; use 'frozen_bn', 'bn' or 'gn'")


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm, **_):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, width, 3, stride), norm(width)
        self.conv2, self.bn2 = _conv(width, width, 3), norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(_conv(cin, width, 1, stride), norm(width))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 (4 * planes channels).

    The stride sits in the 3x3 (torchvision, ResNet v1.5, Detectron2's C2 ResNeXt) or, with
    stride_in_1x1, in the first 1x1 (the original MSRA ResNets, Detectron2's R50/R101).
    """
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm, groups: int = 1, width_per_group: int = 64,
                 stride_in_1x1: bool = False):
        super().__init__()
        cout = planes * 4
        width = planes * width_per_group // 64 * groups  # torchvision's rule = Detectron2's groups * width x2/stage
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1, self.bn1 = _conv(cin, width, 1, s1), norm(width)
        self.conv2, self.bn2 = _conv(width, width, 3, s3, groups), norm(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride), norm(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


_LAYOUTS = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNetBody(nn.Module):
    """ResNet / ResNeXt without avgpool/fc. forward: [B,3,H,W] -> [C2, C3, C4, C5] (strides 4..32).

    groups / width_per_group: ResNeXt's grouped 3x3 (32 / 8 for ResNeXt-101 32x8d); stride_in_1x1: see Bottleneck.
    """

    def __init__(self, depth: int = 50, norm: str = "frozen_bn", eps: float = 1e-5, groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = False):
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"backbone depth {depth} not supported; use one of {', '.join(map(str, _LAYOUTS))}")
        block, counts = _LAYOUTS[depth]
        if block is BasicBlock and (groups != 1 or width_per_group != 64):
            raise ValueError(f"ResNet-{depth} has no grouped convolutions; use depth 50 or 101 for ResNeXt")
        extra = dict(groups=groups, width_per_group=width_per_group, stride_in_1x1=stride_in_1x1)
        norm_fn = lambda c: make_norm(norm, c, eps)  # noqa: E731
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_fn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, n in enumerate(counts):
            width = 64 * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1, norm_fn, **extra))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = [64 * 2 ** i * block.expansion for i in range(4)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats.append(x)
        return feats


def freeze_backbone_layers(body: nn.Module, trainable_layers: int) -> None:
    """Turn off gradients outside the last `trainable_layers` of (conv1, layer1..layer4).

    Same rule as torchvision's `_resnet_fpn_extractor` (5 also trains bn1).
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be 0..5, got {trainable_layers}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(t) for t in train):
            p.requires_grad_(False)
