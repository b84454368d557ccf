"""Native RoIAlign core (C++/CUDA) and its PyTorch custom ops.

`roi_align` and `multilevel_roi_align` run the kernels in plugins/roi_align/ through the
`torch.ops.maskrcnn_deploy.*` ops; `fpn_levels` exposes the kernels' FPN level rule.
"""

from .native import NativeLibraryError
from .torch_ops import fpn_levels, multilevel_roi_align, roi_align

__all__ = ["NativeLibraryError", "roi_align", "multilevel_roi_align", "fpn_levels"]
