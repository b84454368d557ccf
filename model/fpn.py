"""Feature pyramid: P2..P5 from C2..C5 plus P6 = max-pool(P5) (torchvision `backbone.fpn.*` names)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ResNetBody, freeze_backbone_layers, make_norm

__all__ = ["FPN", "BackboneWithFPN"]


def _conv_norm(cin: int, cout: int, k: int, norm: str | None) -> nn.Sequential:
    """Conv (bias only without norm) [+ norm] as `Sequential`, keys `.0` / `.1`."""
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=norm is None)]
    if norm is not None:
        layers.append(make_norm(norm, cout))
    return nn.Sequential(*layers)


class FPN(nn.Module):
    """[C2..C5] -> [P2, P3, P4, P5, P6], each with `out_channels` channels."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, norm: str | None = None):
        super().__init__()
        self.inner_blocks = nn.ModuleList(_conv_norm(c, out_channels, 1, norm) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_conv_norm(out_channels, out_channels, 3, norm) for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        inner = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](inner))
        outs.append(F.max_pool2d(outs[-1], 1, 2, 0))  # P6 ("pool")
        return outs


class BackboneWithFPN(nn.Module):
    """`body` (ResNet) + `fpn`. forward: [B,3,H,W] -> [P2..P6]."""

    def __init__(self, depth: int, norm: str, norm_eps: float, trainable_layers: int,
                 fpn_channels: int = 256, fpn_norm: str | None = None, groups: int = 1, width_per_group: int = 64,
                 stride_in_1x1: bool = False):
        super().__init__()
        self.body = ResNetBody(depth, norm, norm_eps, groups, width_per_group, stride_in_1x1)
        freeze_backbone_layers(self.body, trainable_layers)
        self.fpn = FPN(self.body.out_channels, fpn_channels, fpn_norm)
        self.out_channels = fpn_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.fpn(self.body(x))
