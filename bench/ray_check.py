"""Images per second of `check` and of `bench` in one process and on 1 and 2 Ray workers (runtime/distributed.py).

Each run is the whole check (both sides on every image, matching, AP, report) timed from the call to the
report: in one process with PyTorch's and ONNX Runtime's default threads, in one process on one thread, then
on Ray workers (one thread each, as a one-CPU worker runs). Ray itself is started once beforehand, so a Ray
run's time includes starting its actors and loading both models in each, not starting Ray. By default the models are made here: a seeded ResNet-18-FPN with small
heads at 128-160 px, its ONNX graph (custom RoIAlign node) checked against the checkpoint (eager PyTorch), on
--images synthetic images; give --reference/--artifact/--data to time your own.

`bench --ray` (runtime/distributed.py `bench_on_ray`) times the artifact alone: each worker loads and warms it up
before its first timed call, so its figure is the steady rate, images per second of wall time from the first timed
call to the last across all workers (model loading excluded), beside each worker's own rate and the latency
percentiles of every worker's calls; the one-process row is `bench` on one thread (images per second of summed
call time).

What a 2-core machine can show: that the work is spread (each worker takes part of the images), what Ray
costs per run (actor start, a model load per worker, results sent back through the object store) and that
the report is the single-process one. What it cannot: speed-up. One process already uses both cores
(PyTorch and ONNX Runtime intra-op threads), while a Ray worker asks for one CPU and runs PyTorch on one
thread, so two workers on two cores do the same arithmetic on the same cores, plus Ray's overhead. Scaling
shows on a cluster, where each worker has its own cores or GPU; the command users run there joins the
cluster the environment names:

    maskrcnn-deploy check model.pt model.engine --data val.json --tolerance fp16 --ray auto --report parity.json
    maskrcnn-deploy bench model.engine --data val.json --max-images 2000 --iterations 1 --ray auto --json bench.json
    .venv/bin/python bench/ray_check.py --reference model.pt --artifact model.onnx --data val.json \
        --ray auto --workers 8,16,32

    .venv/bin/python bench/ray_check.py --out out/bench_ray --images 64   # here: 1 process, 1 and 2 local workers
    .venv/bin/python bench/ray_check.py --out out/bench_ray --images 64 --commands bench   # bench only
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from maskrcnn_deploy.model.data.images import images_and_annotations, load_rgb
from maskrcnn_deploy.runtime import bench, parity
from maskrcnn_deploy.runtime.check import run_check
from maskrcnn_deploy.runtime.distributed import bench_on_ray, check_on_ray
from maskrcnn_deploy.runtime.load import load

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


def bench_row(label: str, report: dict) -> dict:
    """Print and return the figures of one `bench` report (runtime/bench.py bench_report, with --ray its "ray")."""
    (artifact,) = report["artifacts"]
    lat, ray = artifact["latency_ms"], report.get("ray")
    row = {"run": label, "images": artifact["images"], "p50_ms": round(lat["p50"], 1), "p90_ms": round(lat["p90"], 1),
           "p99_ms": round(lat["p99"], 1), "images_per_s_summed_call_time": round(artifact["throughput_ips"], 3)}
    if ray:
        row.update(wall_s=round(ray["wall_s"], 2), images_per_s=round(ray["throughput_ips"], 3),
                   workers_that_ran=len(ray["per_worker"]),
                   per_worker=[{"images": w["images"], "images_per_s": round(w["images_per_s"], 3)}
                               for w in ray["per_worker"]])
    rate = f"{row['images_per_s']:.2f} images/s of wall time across the cluster, per worker " + ", ".join(
        f"{w['images_per_s']:.2f}" for w in row["per_worker"]) if ray else \
        f"{row['images_per_s_summed_call_time']:.2f} images/s of summed call time"
    print(f"{label}: {row['images']} images, {rate}; p50/p90/p99 {row['p50_ms']}/{row['p90_ms']}/{row['p99_ms']} ms",
          flush=True)
    return row


def bench_rows(artifact, data, worker_counts: list[int], iterations: int) -> list[dict]:
    """`bench` of the artifact on one thread in this process, then on each count of Ray workers (Ray running)."""
    paths, _, _ = images_and_annotations(data)
    settings = bench.BenchSettings(warmup=2, iterations=iterations, threads=1, data=str(data))
    predictor = load(artifact, threads=1)
    images = [load_rgb(p) for p in paths]
    times = one_thread(lambda: bench.run_bench([predictor], [artifact], images, settings, show_progress=False))
    rows = [bench_row("bench, 1 process, 1 thread", bench.bench_report(times, settings, bench.machine_info(),
                                                                      len(images)))]
    for workers in worker_counts:
        rows.append(bench_row(f"bench --ray, {workers} worker(s)",
                              bench_on_ray([artifact], ["auto"], paths, settings, workers=workers)))
    return rows


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
    parser.add_argument("--commands", default="check,bench", help="what to time: check, bench or both")
    parser.add_argument("--iterations", type=int, default=2, help="bench: timed passes over the images")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reference and args.artifact and args.data:
        reference, artifact, data = args.reference, args.artifact, args.data
    else:
        reference, artifact, data = make_models(out, args.images)
    commands = set(args.commands.split(","))
    worker_counts = [int(w) for w in args.workers.split(",")]
    tolerances = parity.tolerances_from(args.tolerance)
    rows, bench_runs = [], []
    if "check" in commands:
        rows.append(timed(f"1 process, {torch_threads()} threads",
                          lambda: run_check(reference, artifact, data, tolerances)))
        rows.append(one_thread(lambda: timed("1 process, 1 thread", lambda: run_check(reference, artifact, data,
                                                                                      tolerances, threads=1))))

    import ray

    if args.ray:
        ray.init(address=args.ray, include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    try:
        for workers in worker_counts if "check" in commands else []:
            rows.append(timed(f"ray, {workers} worker(s)",
                              lambda: check_on_ray(reference, artifact, data, tolerances, threads=1,
                                                   workers=workers)))
        if "bench" in commands:
            bench_runs = bench_rows(artifact, data, worker_counts, args.iterations)
        cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    finally:
        ray.shutdown()
    summary = {"cluster": cluster, "cpu_count_here": os.cpu_count()}
    if rows:
        summary.update({"runs": [{k: v for k, v in r.items() if k != "report"} for r in rows],
                        # a Ray worker runs one thread per model: its report is byte-equal to the 1-thread process's
                        "report_equal_to_1_thread_process": {r["run"]: r["report"] == rows[1]["report"] for r in rows},
                        "passed": {r["run"]: r["report"]["passed"] for r in rows}})
    if bench_runs:
        summary["bench"] = bench_runs
    (out / "ray_check.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("cluster", "report_equal_to_1_thread_process", "passed")
                      if k in summary}))
    print(f"summary: {out / 'ray_check.json'}")


if __name__ == "__main__":
    main()
