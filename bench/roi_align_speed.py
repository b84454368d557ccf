"""Speed of our fused multi-level RoIAlign against torchvision's MultiScaleRoIAlign, in one run.

Shapes: P2-P5 of one 800x1344 image, 256 channels; 1000 rois pooled 7x7 (box head, sampling 2) and
100 rois pooled 14x14 (mask head, sampling 2). Roi sizes are log-uniform 16-640 px, so all four levels
are used. Prints medians and ratios (torchvision time / ours: > 1 means we are faster).

    .venv/bin/python bench/roi_align_speed.py            # CPU, plus CUDA when a GPU is present
    .venv/bin/python bench/roi_align_speed.py --repeat 50 --threads 2

On a GPU the same script times CUDA forward in float32 and float16 with CUDA events, gives the ratio
to torchvision's CUDA path, and the achieved bytes/s against a measured device-to-device copy.
"""

from __future__ import annotations

import argparse
import statistics
from collections import OrderedDict

import torch
import torchvision
from timing import median_time  # bench/timing.py

from maskrcnn_deploy.plugins.torch_ops import fpn_levels, multilevel_roi_align

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
IMAGE = (800, 1344)


def make_inputs(num_rois: int, channels: int = 256, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, channels, IMAGE[0] // 2 ** (i + 2), IMAGE[1] // 2 ** (i + 2), generator=gen)
             for i in range(4)]
    side = torch.exp(torch.empty(num_rois, 2).uniform_(torch.log(torch.tensor(16.0)).item(),
                                                       torch.log(torch.tensor(640.0)).item(), generator=gen))
    x1 = torch.rand(num_rois, generator=gen) * (IMAGE[1] - side[:, 0])
    y1 = torch.rand(num_rois, generator=gen) * (IMAGE[0] - side[:, 1])
    rois = torch.stack([torch.zeros(num_rois), x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1)
    return feats, rois


def time_cuda(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def torchvision_pooler(out: int):
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], out, 2)

    def run(feats, rois):
        named = OrderedDict((f"p{i + 2}", f) for i, f in enumerate(feats))
        return pooler(named, [rois[:, 1:]], [IMAGE])
    return run


def ours(out: int):
    return lambda feats, rois: multilevel_roi_align(feats, rois, out, SCALES, 2, False)


def bytes_moved(feats, rois, out: int, dtype_size: int) -> int:
    """Lower bound on DRAM traffic: each roi's output written once, plus the feature taps it reads."""
    channels = feats[0].shape[1]
    samples = 4 * 4 * out * out  # 2x2 samples per bin, 4 taps each
    return rois.shape[0] * channels * (out * out + samples) * dtype_size


def cpu_section(repeat: int) -> None:
    print(f"CPU, {torch.get_num_threads()} threads; times are medians of {repeat}")
    for num_rois, out in ((1000, 7), (100, 14)):
        feats, rois = make_inputs(num_rois)
        counts = torch.bincount(fpn_levels(rois, SCALES).long(), minlength=4).tolist()
        a = ours(out)(feats, rois)
        b = torchvision_pooler(out)(feats, rois)
        t_ours = median_time(lambda: ours(out)(feats, rois), repeat)
        t_tv = median_time(lambda: torchvision_pooler(out)(feats, rois), repeat)
        print(f"  forward  {num_rois:5d} rois {out}x{out} (rois per level P2-P5 {counts}): ours {t_ours * 1e3:8.2f} ms"
              f"  torchvision {t_tv * 1e3:8.2f} ms  ratio {t_tv / t_ours:5.2f}x  max|diff| {(a - b).abs().max():.1e}")
        leaves = [f.requires_grad_() for f in feats]
        grad = torch.randn_like(a)

        def backward(pool):
            return lambda: torch.autograd.grad(pool(leaves, rois), leaves, grad)
        t_ours = median_time(backward(ours(out)), max(3, repeat // 4))
        t_tv = median_time(backward(torchvision_pooler(out)), max(3, repeat // 4))
        print(f"  fwd+bwd  {num_rois:5d} rois {out}x{out}: ours {t_ours * 1e3:8.2f} ms  torchvision "
              f"{t_tv * 1e3:8.2f} ms  ratio {t_tv / t_ours:5.2f}x")


def cuda_section(repeat: int) -> None:
    print(f"CUDA, {torch.cuda.get_device_name()}; CUDA-event medians of {repeat}")
    big = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    copy = torch.empty_like(big)
    t_copy = time_cuda(lambda: copy.copy_(big), repeat)
    copy_bw = 2 * big.numel() / t_copy
    print(f"  device-to-device copy: {copy_bw / 1e9:.0f} GB/s (read + write)")
    for num_rois, out in ((1000, 7), (100, 14)):
        feats, rois = make_inputs(num_rois)
        for dtype in (torch.float32, torch.float16):
            f = [x.cuda().to(dtype) for x in feats]
            r = rois.cuda().to(dtype)
            t_ours = time_cuda(lambda: ours(out)(f, r), repeat)
            t_tv = time_cuda(lambda: torchvision_pooler(out)(f, r), repeat)
            bw = bytes_moved(f, r, out, f[0].element_size()) / t_ours
            print(f"  forward {str(dtype):14s} {num_rois:5d} rois {out}x{out}: ours {t_ours * 1e6:8.1f} us  "
                  f"torchvision {t_tv * 1e6:8.1f} us  ratio {t_tv / t_ours:5.2f}x  "
                  f"{bw / 1e9:7.1f} GB/s = {bw / copy_bw:5.1%} of copy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    cpu_section(args.repeat)
    if torch.cuda.is_available():
        cuda_section(args.repeat * 5)
    else:
        print("CUDA: no GPU on this machine, CUDA timings skipped")


if __name__ == "__main__":
    main()
