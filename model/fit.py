"""How an image is resized for inference (`Fit`): one rule for the eager model, every predictor, calibration
and the exported graph's metadata. Plain Python, no torch, so torch-free runtimes share it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fit"]


@dataclass(frozen=True)
class Fit:
    """How an image is resized for inference: the one home of the rule, used by the eager model,
    every predictor, calibration and the ONNX metadata (`to_dict`).

        scale = min(min_size / short side, max_size / long side, canvas H / h, canvas W / w)

    The canvas terms apply to a static graph's input (H, W) only, so an image of any aspect ratio
    fits it (a portrait photo in a landscape canvas is scaled to the canvas height). The resized
    size is floor(side * scale), as torch's interpolate(scale_factor=..., recompute_scale_factor=True).
    """

    min_size: int                           # test size of the short side
    max_size: int                           # cap on the long side
    canvas: tuple[int, int] | None = None   # (H, W) of a static graph's input; None: no cap

    @classmethod
    def of(cls, config, canvas: tuple[int, int] | None = None) -> "Fit":
        """The test-time fit of a MaskRCNNConfig, optionally into a static canvas (H, W)."""
        return cls(config.test_min_size, config.max_size, tuple(int(v) for v in canvas) if canvas else None)

    def scale(self, height: int, width: int) -> float:
        s = min(self.min_size / min(height, width), self.max_size / max(height, width))
        if self.canvas is not None:
            s = min(s, self.canvas[0] / height, self.canvas[1] / width)
        return s

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of an image of (height, width) after resizing (a side may round down to 0 px)."""
        s = self.scale(height, width)
        return int(height * s), int(width * s)

    def to_dict(self) -> dict:
        return {"min_size": self.min_size, "max_size": self.max_size,
                "canvas": list(self.canvas) if self.canvas else None,
                "rule": "scale = min(min_size / short side, max_size / long side, canvas H / h, canvas W / w); "
                        "size = floor(side * scale); bilinear, then pad bottom/right"}

    @classmethod
    def from_dict(cls, d: dict) -> "Fit":
        return cls(int(d["min_size"]), int(d["max_size"]), tuple(d["canvas"]) if d.get("canvas") else None)
