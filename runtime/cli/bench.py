"""`maskrcnn-deploy bench`: speed of artifacts side by side (runtime/bench.py):

    maskrcnn-deploy bench runs/r18/model_final.pt out/r18.onnx out/r18.engine --data data/synth/val.json \\
        [--max-images 20] [--warmup 3] [--iterations 5] [--threads 2] [--batch-size 1] [--out out/bench]
    maskrcnn-deploy bench out/r18.onnx out/r18.onnx --backend onnxruntime --backend openvino --data ...
    maskrcnn-deploy bench out/r18.engine --data val.json --max-images 2000 --ray auto [--ray-workers 8]

Prints one row per artifact (p50/p90/p99 ms per call, images/s, median stage times, speed-up vs the
first artifact); --json / --plot (or --out DIR for DIR/bench.json and DIR/bench.png) write them.
`--ray [ADDRESS]` spreads the calls over Ray workers (runtime/distributed.py `bench_on_ray`, the `[ray]` extra:
exit 3 without it), each loading and warming up every artifact once; the report adds images per second across
the cluster (wall time from the first call to the last) and per worker.
Bad input (missing artifact, unknown suffix, no images): one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.runtime.cli.checkpoint_options import (
    add_backend_option,
    add_checkpoint_options,
    add_ray_options,
    checkpoint_options,
    require_torch_for_checkpoints,
)


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model.data.images import images_and_annotations
    from maskrcnn_deploy.runtime import bench

    if args.ray is not None:
        require_extra("ray", "`maskrcnn-deploy bench --ray`")
    for name in ("max_images", "iterations", "batch_size", "threads", "ray_workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be 0 or more, got {args.warmup}")
    for path in args.artifacts:
        if not Path(path).is_file():
            raise UsageError(f"no such artifact: {path} (give .pt/.pth checkpoints, .onnx graphs or "
                             ".engine/.plan TensorRT engines)")
    require_torch_for_checkpoints("bench", args.artifacts)
    json_path, plot_path = args.json, args.plot
    if args.out:
        json_path = json_path or str(Path(args.out) / "bench.json")
        plot_path = plot_path or str(Path(args.out) / "bench.png")
    paths, _, _ = images_and_annotations(args.data, args.max_images)
    settings = bench.BenchSettings(warmup=args.warmup, iterations=args.iterations, batch_size=args.batch_size,
                                   threads=args.threads, data=args.data)
    backends = _backends(args.backend, args.artifacts)
    if args.ray is not None:
        from maskrcnn_deploy.runtime.distributed import bench_on_ray
        report = bench_on_ray(args.artifacts, backends, paths, settings, checkpoint_options(args), address=args.ray,
                              workers=args.ray_workers)
    else:
        report = _bench_here(args, paths, backends, settings)
    for line in bench.summary_lines(report):
        print(line)
    if json_path:
        bench.write_bench_json(report, json_path)
        print(f"report: {json_path}")
    if plot_path:
        bench.save_bench_plot(report, plot_path)
        print(f"plot: {plot_path}")
    return 0


def _bench_here(args: argparse.Namespace, paths: list, backends: list[str], settings) -> dict:
    """The report of the artifacts run in this process, torch on --threads during the run only."""
    from maskrcnn_deploy.model.data.images import load_rgb
    from maskrcnn_deploy.runtime import bench
    from maskrcnn_deploy.runtime.load import load

    predictors = [load(path, threads=args.threads, backend=backend, **checkpoint_options(args))
                  for path, backend in zip(args.artifacts, backends)]
    torch = sys.modules.get("torch")  # checkpoints run on torch's threads; a torch-free run has none to set
    threads_before = torch.get_num_threads() if torch else None
    if torch and args.threads:
        torch.set_num_threads(args.threads)
    try:
        for path, predictor in zip(args.artifacts, predictors):
            if predictor.fixed_batch and predictor.fixed_batch != args.batch_size:
                print(f"note: {path} has a static batch of {predictor.fixed_batch}: a call of {args.batch_size} "
                      f"images runs it {'padded with copies' if predictor.fixed_batch > args.batch_size else 'several times'}")
        images = [load_rgb(path) for path in paths]  # decoded once (uint8 [H,W,3]), outside every timing
        times = bench.run_bench(predictors, args.artifacts, images, settings)
        report = bench.bench_report(times, settings, bench.machine_info(), num_images=len(images))
    finally:
        if torch:
            torch.set_num_threads(threads_before)
    return report


def _backends(given: list[str] | None, artifacts: list[str]) -> list[str]:
    """One backend per artifact from `--backend` given once (for every .onnx artifact; checkpoints and
    engines keep "auto") or once per artifact; UsageError otherwise."""
    if not given:
        return ["auto"] * len(artifacts)
    if len(given) == 1:
        return [given[0] if Path(path).suffix.lower() == ".onnx" else "auto" for path in artifacts]
    if len(given) != len(artifacts):
        raise UsageError(f"--backend given {len(given)} times for {len(artifacts)} artifacts: give it once, "
                         "or once per artifact in their order")
    return given


def add_parser(sub: argparse._SubParsersAction) -> None:
    be = sub.add_parser("bench", help="latency percentiles, throughput and stage times of artifacts side by side")
    be.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                    help=".pt/.pth checkpoint, .onnx graph or .engine/.plan TensorRT engine; the first is the "
                         "baseline of the speed-up column")
    be.add_argument("--data", required=True, help="COCO json, or a folder of images")
    add_checkpoint_options(be)
    be.add_argument("--max-images", type=int, default=20)
    be.add_argument("--warmup", type=int, default=3, help="untimed predict calls per artifact")
    be.add_argument("--iterations", "--repeat", type=int, default=5, help="timed passes over the images")
    be.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads and torch threads (checkpoints, the RoIAlign op)")
    be.add_argument("--batch-size", type=int, default=1, help="images per predict call")
    add_backend_option(be, "the .onnx artifacts (once for all, or once per artifact, in order: the same graph may "
                           "be given twice)", action="append", default=None)
    be.add_argument("--json", default=None, help="write the report (JSON) here")
    be.add_argument("--plot", default=None, help="write the stacked-bar chart (PNG) here")
    be.add_argument("--out", default=None, help="folder for bench.json and bench.png (unless --json/--plot say)")
    add_ray_options(be)
    be.set_defaults(func=run)
