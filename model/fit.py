"""How an image is resized for inference (`Fit`): one rule for the eager model, every predictor, calibration
and the exported graph's metadata. Plain Python, no torch, so torch-free runtimes share it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fit", "RESIZE_RULES", "shortest_edge_size"]

# How a Fit rounds and resamples (MaskRCNNConfig.transform_rule picks it): "torchvision" floors each side and
# resamples the float image bilinearly (model/transform.py); "detectron2" rounds each side half up (int(x + 0.5))
# and resamples the uint8 image with PIL's bilinear filter (model/detectron2_transform.py).
RESIZE_RULES = ("torchvision", "detectron2")


def shortest_edge_size(height: int, width: int, min_size: int, max_size: int) -> tuple[float, float]:
    """(h, w) as floats after Detectron2's ResizeShortestEdge (data/transforms/augmentation_impl.py,
    get_output_shape): short side -> min_size, then both sides scaled down so the long side is <= max_size.
    Detectron2 rounds each with int(x + 0.5)."""
    scale = min_size * 1.0 / min(height, width)
    new_h, new_w = (min_size * 1.0, scale * width) if height < width else (scale * height, min_size * 1.0)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return new_h, new_w


@dataclass(frozen=True)
class Fit:
    """How an image is resized for inference: the one home of the rule, used by the eager model,
    every predictor, calibration and the ONNX metadata (`to_dict`).

        scale = min(min_size / short side, max_size / long side, canvas H / h, canvas W / w)

    The canvas terms apply to a static graph's input (H, W) only, so an image of any aspect ratio
    fits it (a portrait photo in a landscape canvas is scaled to the canvas height). The resized
    size is floor(side * scale), as torch's interpolate(scale_factor=..., recompute_scale_factor=True).
    With resize="detectron2" the sizes are Detectron2's (`shortest_edge_size`, then scaled into the canvas
    when they exceed it) rounded with int(x + 0.5).
    """

    min_size: int                           # test size of the short side
    max_size: int                           # cap on the long side
    canvas: tuple[int, int] | None = None   # (H, W) of a static graph's input; None: no cap
    resize: str = "torchvision"             # one of RESIZE_RULES

    def __post_init__(self):
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.resize!r}; use one of {', '.join(RESIZE_RULES)}")

    @classmethod
    def of(cls, config, canvas: tuple[int, int] | None = None) -> "Fit":
        """The test-time fit of a MaskRCNNConfig, optionally into a static canvas (H, W)."""
        return cls(config.test_min_size, config.max_size, tuple(int(v) for v in canvas) if canvas else None,
                   config.transform_rule)

    def scale(self, height: int, width: int) -> float:
        s = min(self.min_size / min(height, width), self.max_size / max(height, width))
        if self.canvas is not None:
            s = min(s, self.canvas[0] / height, self.canvas[1] / width)
        return s

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of an image of (height, width) after resizing (a side may round down to 0 px)."""
        if self.resize == "detectron2":
            new_h, new_w = shortest_edge_size(height, width, self.min_size, self.max_size)
            if self.canvas is not None and (new_h > self.canvas[0] or new_w > self.canvas[1]):
                s = min(self.canvas[0] / new_h, self.canvas[1] / new_w)
                new_h, new_w = new_h * s, new_w * s
            return int(new_h + 0.5), int(new_w + 0.5)
        s = self.scale(height, width)
        return int(height * s), int(width * s)

    def to_dict(self) -> dict:
        if self.resize == "detectron2":
            rule = ("Detectron2's ResizeShortestEdge(min_size, max_size), scaled into the canvas when larger; "
                    "size = int(side + 0.5); PIL bilinear on uint8, then pad bottom/right")
        else:
            rule = ("scale = min(min_size / short side, max_size / long side, canvas H / h, canvas W / w); "
                    "size = floor(side * scale); bilinear, then pad bottom/right")
        return {"min_size": self.min_size, "max_size": self.max_size,
                "canvas": list(self.canvas) if self.canvas else None, "resize": self.resize, "rule": rule}

    @classmethod
    def from_dict(cls, d: dict) -> "Fit":
        return cls(int(d["min_size"]), int(d["max_size"]), tuple(d["canvas"]) if d.get("canvas") else None,
                   d.get("resize", "torchvision"))
