"""Images per second of `check` in one process and on 1 and 2 Ray workers (runtime/distributed.py).

Each run is the whole check (both sides on every image, matching, AP, report) timed from the call to the
report: in one process with PyTorch's and ONNX Runtime's default threads, in one process on one thread, then
on Ray workers (one thread each, as a one-CPU worker runs). Ray itself is started once beforehand, so a Ray
run's time includes starting its actors and loading both models in each, not starting Ray. By default the models are made here: a seeded ResNet-18-FPN with small
heads at 128-160 px, its ONNX graph (custom RoIAlign node) checked against the checkpoint (eager PyTorch), on
--images synthetic images; give --reference/--artifact/--data to time your own.

What a 2-core machine can show: that the work is spread (each worker takes part of the images), what Ray
costs per run (actor start, a model load per worker, results sent back through the object store) and that
the report is the single-process one. What it cannot: speed-up. One process already uses both cores
(PyTorch and ONNX Runtime intra-op threads), while a Ray worker asks for one CPU and runs PyTorch on one
thread, so two workers on two cores do the same arithmetic on the same cores, plus Ray's overhead. Scaling
shows on a cluster, where each worker has its own cores or GPU; the command users run there joins the
cluster the environment names:

    maskrcnn-deploy check model.pt model.engine --data val.json --tolerance fp16 --ray auto --report parity.json
    .venv/bin/python bench/ray_check.py --reference model.pt --artifact model.onnx --data val.json \
        --ray auto --workers 8,16,32

    .venv/bin/python bench/ray_check.py --out out/bench_ray --images 64   # here: 1 process, 1 and 2 local workers
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from maskrcnn_deploy.runtime import parity
from maskrcnn_deploy.runtime.check import run_check
from maskrcnn_deploy.runtime.distributed import check_on_ray

SMALL = dict(norm="bn", min_size=128, max_size=160, box_score_thresh=0.05, fpn_channels=64, mask_head_channels=64,
             box_fc_dim=256, detections_per_img=20, rpn_post_nms_top_n_test=200)


def make_models(root: Path, images: int) -> tuple[Path, Path, Path]:
    """(checkpoint, its ONNX graph, val json of `images` synthetic 150x190 images) under `root`."""
    import torch

    from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint
    from maskrcnn_deploy.model.checkpoint import save_checkpoint
    from maskrcnn_deploy.model.config import resnet18_fpn
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
    from maskrcnn_deploy.model.mask_rcnn import MaskRCNN

    paths = make_synthetic_dataset(root / "data", num_train=1, num_val=images, seed=5, image_size=(150, 190))
    config = resnet18_fpn(4, **SMALL)
    torch.manual_seed(0)
    model = MaskRCNN(config)
    with torch.no_grad():  # confident masks, as a trained model's (tests/seeded_models.py make_masks_confident)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(20)
    checkpoint = save_checkpoint(root / "r18.pt", model, config)
    graph = root / "r18.onnx"
    if not graph.exists():
        export_checkpoint(checkpoint, graph, ExportOptions())
    return checkpoint, graph, Path(paths["val"])


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def one_thread(run):
    """run() with PyTorch on one thread (as in a one-CPU Ray worker), restoring the count after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


def timed(label: str, run) -> dict:
    """Run `run()` (a CheckRun), print and return its images per second."""
    t0 = time.perf_counter()
    checked = run()
    seconds = time.perf_counter() - t0
    images = checked.report.num_images
    print(f"{label}: {images} images in {seconds:.1f} s = {images / seconds:.2f} images/s "
          f"({'PASS' if checked.report.passed else 'FAIL'})", flush=True)
    return {"run": label, "images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 3),
            "report": checked.report.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench_ray")
    parser.add_argument("--images", type=int, default=16, help="synthetic images when --data is not given")
    parser.add_argument("--reference", default=None)
    parser.add_argument("--artifact", default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--tolerance", default="fp32")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="join this cluster ('auto'); default: local")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reference and args.artifact and args.data:
        reference, artifact, data = args.reference, args.artifact, args.data
    else:
        reference, artifact, data = make_models(out, args.images)
    tolerances = parity.tolerances_from(args.tolerance)
    rows = [timed(f"1 process, {torch_threads()} threads", lambda: run_check(reference, artifact, data, tolerances))]
    rows.append(one_thread(lambda: timed("1 process, 1 thread", lambda: run_check(reference, artifact, data,
                                                                                  tolerances, threads=1))))

    import ray

    if args.ray:
        ray.init(address=args.ray, include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(timed(f"ray, {workers} worker(s)",
                              lambda: check_on_ray(reference, artifact, data, tolerances, threads=1,
                                                   workers=workers)))
        cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    finally:
        ray.shutdown()
    summary = {"cluster": cluster, "cpu_count_here": os.cpu_count(),
               "runs": [{k: v for k, v in r.items() if k != "report"} for r in rows],
               # a Ray worker runs one thread per model: its report is byte-equal to the 1-thread process's
               "report_equal_to_1_thread_process": {r["run"]: r["report"] == rows[1]["report"] for r in rows},
               "passed": {r["run"]: r["report"]["passed"] for r in rows}}
    (out / "ray_check.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("cluster", "report_equal_to_1_thread_process", "passed")}))
    print(f"summary: {out / 'ray_check.json'}")


if __name__ == "__main__":
    main()
