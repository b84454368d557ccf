"""Speed of the predictors' postprocessing in numpy (runtime/predictor.py) against the PyTorch path it replaced.

One image's raw outputs, 100 detections into a 1333x800 (W x H) image, the graph's input the same size;
boxes log-uniform 16-640 px, a fifth of them crossing the border; 28x28 masks with smooth blob edges.
Each side turns them into what a predictor returns: boxes in original pixels, full-size binary masks
(probability >= 0.5) and their COCO RLE.

    numpy : runtime/predictor.py `detections_from_raw` (resize_boxes, model/resize_paste_numpy.py
            paste_masks straight into bool masks, RLE)
    torch : model/transform.py resize_boxes + paste_masks_in_image in float32 chunks of PASTE_BUDGET_BYTES,
            threshold, RLE (the predictors' code before issue 20)

Round-robin in one run (each round times both, alternating which goes first), median of --repeat rounds;
prints the medians, the ratio torch / numpy (> 1: numpy is faster) and how many mask pixels differ.

    .venv/bin/python bench/postprocess_speed.py                    # 25 rounds, torch on 1 thread
    .venv/bin/python bench/postprocess_speed.py --repeat 50 --threads 2 --out out/bench_postprocess
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskrcnn_deploy.model.transform import paste_masks_in_image, resize_boxes
from maskrcnn_deploy.runtime.predictor import PASTE_BUDGET_BYTES, detections_from_raw

IMAGE = (800, 1333)  # (H, W)


def make_raw(num: int, size: tuple[int, int] = IMAGE, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of one image's raw outputs: boxes [1,num,4] in `size` pixels, masks [1,num,28,28], ..."""
    rng = np.random.default_rng(seed)
    h, w = size
    side = np.exp(rng.uniform(np.log(16), np.log(640), (num, 2)))                        # [num,2] (w, h)
    x1 = rng.uniform(-0.1 * side[:, 0], w - 0.9 * side[:, 0])
    y1 = rng.uniform(-0.1 * side[:, 1], h - 0.9 * side[:, 1])
    boxes = np.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], axis=1)
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    centres = rng.uniform(0.35, 0.65, (num, 2, 1, 1))
    masks = 1 / (1 + np.exp(-12 * (0.35 - np.hypot(yy - centres[:, 0], xx - centres[:, 1]))))
    return {"boxes": boxes[None].astype(np.float32), "scores": np.sort(rng.random(num))[::-1][None].astype(np.float32),
            "labels": rng.integers(1, 81, (1, num)), "masks": masks[None].astype(np.float32),
            "num_detections": np.array([num])}


def numpy_path(raw: dict, sizes: np.ndarray, original: tuple[int, int]) -> dict:
    return detections_from_raw(raw, sizes, [original], 0.5)[0]


def torch_path(raw: dict, sizes: np.ndarray, original: tuple[int, int]) -> dict:
    """The PyTorch postprocessing as runtime/predictor.py ran it before the numpy path."""
    n = int(raw["num_detections"][0])
    boxes = resize_boxes(torch.from_numpy(raw["boxes"][0][:n]), (int(sizes[0, 0]), int(sizes[0, 1])), original)
    small = torch.from_numpy(raw["masks"][0][:n])[:, None]
    masks = np.zeros((n, *original), dtype=bool)
    step = max(1, PASTE_BUDGET_BYTES // (4 * original[0] * original[1]))
    for start in range(0, n, step):
        probs = paste_masks_in_image(small[start:start + step], boxes[start:start + step], original)
        masks[start:start + step] = (probs[:, 0] >= 0.5).numpy()
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    return {"boxes": boxes.numpy(), "masks": masks, "rles": rles}


def round_robin(paths: dict, args, repeat: int, warmup: int) -> dict[str, list[float]]:
    """name -> seconds of each timed round; round r runs the paths in turn, first one alternating."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(warmup + repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            paths[name](*args)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=25, help="timed rounds (>= 20 for the issue's figure)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", help="folder for summary.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = make_raw(args.detections)
    sizes = np.array([IMAGE], np.float32)
    inputs = (raw, sizes, IMAGE)
    got, expected = numpy_path(*inputs), torch_path(*inputs)
    differ = int((got["masks"] != expected["masks"]).sum())
    box_diff = float(np.abs(got["boxes"] - expected["boxes"]).max())
    times = round_robin({"numpy": numpy_path, "torch": torch_path}, inputs, args.repeat, args.warmup)
    med = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    ratio = med["torch"] / med["numpy"]
    print(f"postprocess of {args.detections} detections into a {IMAGE[1]}x{IMAGE[0]} image, torch "
          f"{torch.__version__} on {args.threads} thread(s), numpy {np.__version__}; medians of {args.repeat} "
          f"round-robin rounds after {args.warmup} warm-up")
    print(f"numpy {med['numpy']:8.1f} ms   torch {med['torch']:8.1f} ms   torch / numpy = {ratio:.2f}x")
    print(f"masks differ on {differ} of {got['masks'].size} pixels, boxes max|diff| {box_diff:.1e} px")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"detections": args.detections, "image_hw": list(IMAGE), "repeat": args.repeat,
                   "torch_threads": args.threads, "median_ms": med, "torch_over_numpy": ratio,
                   "mask_pixels_differing": differ, "box_max_abs_diff": box_diff}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
