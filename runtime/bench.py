"""Speed of deployment artifacts side by side: latency percentiles, throughput, per-stage breakdown.

    predictors = [load("model_final.pt"), load("model.onnx")]
    times = run_bench(predictors, ["model_final.pt", "model.onnx"], images, BenchSettings(iterations=5))
    report = bench_report(times, settings, machine_info(), num_images=len(images))
    print("\\n".join(summary_lines(report)))
    write_bench_json(report, "bench.json")
    save_bench_plot(report, "bench.png")

What one sample is: the wall time of one `Predictor.predict` call on `batch_size` images, split
into the predictor's STAGES (preprocess, inference, postprocess incl. mask pasting and RLE). The
images are decoded to tensors once, before any timing, so decoding is in no stage and no total.

Warm-up: `warmup` untimed calls per artifact first (lazy initialisation, allocator and cache growth).
Interleaving: the artifacts take turns call by call (each batch of each pass runs on every artifact,
in the order given), so background load (other processes, CPU frequency changes) hits all of
them alike instead of whichever artifact happened to run during a busy stretch.

Units: latency in milliseconds per call; throughput in images per second of summed call time;
speed-up = the first artifact's p50 latency / this artifact's p50 (above 1 = faster than the first).

On a Ray cluster (`bench --ray`, runtime/distributed.py `bench_on_ray`) each worker warms up (`warm_up`) and
times its calls (`timed_call`, recorded by `ArtifactTimes.add`) as here; the driver gathers every worker's
samples into the same report and adds a "ray" section (`cluster_section`): images per second of wall time from
the first timed call to the last across all workers, per artifact and per worker.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.common.files import atomic_write, write_json
from maskrcnn_deploy.common.progress import Progress
from maskrcnn_deploy.runtime.predictor import STAGES, Predictor

__all__ = ["BenchSettings", "ArtifactTimes", "CallSpan", "batches_of", "warm_up", "timed_call", "run_bench",
           "machine_info", "bench_report", "cluster_section", "summary_lines", "write_bench_json", "save_bench_plot",
           "SCHEMA", "STAGE_COLORS"]

SCHEMA = {"name": "maskrcnn-deploy.bench", "version": 1}
PERCENTILES = (50, 90, 99)
STAGE_COLORS = {"preprocess": (79, 129, 189), "inference": (247, 150, 70), "postprocess": (120, 170, 60)}


@dataclass
class BenchSettings:
    warmup: int = 3            # untimed predict calls per artifact
    iterations: int = 1        # timed passes over the images
    batch_size: int = 1        # images per predict call
    threads: int | None = None  # recorded only: the caller sets ONNX Runtime / torch threads
    data: str | None = None    # recorded only: where the images came from


@dataclass
class ArtifactTimes:
    """The timed calls of one artifact: seconds per call, in total and per stage."""

    name: str
    path: str
    backend: str
    static_batch: int | None
    input_size: tuple[int, int] | None
    total: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    images: int = 0

    def add(self, seconds: float, stages: dict[str, float], images: int) -> None:
        """Record one timed call of `images` images (timed_call's result)."""
        self.total.append(seconds)
        for stage in STAGES:
            self.stages[stage].append(stages[stage])
        self.images += images


@dataclass
class CallSpan:
    """When one timed call ran on a bench --ray worker: wall-clock seconds (time.time(), comparable across the
    processes of a machine and, NTP-synchronised, across a cluster's machines)."""

    worker: str      # the worker (host/actor) that ran it
    artifact: int    # index of the artifact
    images: int
    start: float
    end: float


def batches_of(items: Sequence, batch_size: int) -> list[list]:
    """items in consecutive batches of batch_size (the last one shorter); UsageError when there are none."""
    if not items:
        raise UsageError("no images to benchmark on: point --data at a folder of images or a COCO json")
    return [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def warm_up(predictors: Sequence[Predictor], batches: Sequence[list], settings: BenchSettings) -> None:
    """`settings.warmup` untimed calls per predictor, cycling over `batches`."""
    for predictor in predictors:
        for i in range(settings.warmup):
            predictor.predict(batches[i % len(batches)], batch_size=settings.batch_size)


def timed_call(predictor: Predictor, batch: list, batch_size: int) -> tuple[float, dict[str, float]]:
    """One timed predict call on `batch`: (seconds, {stage: seconds})."""
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    predictor.predict(batch, batch_size=batch_size, timings=stages)
    return time.perf_counter() - t0, stages


def run_bench(predictors: Sequence[Predictor], paths: Sequence[str | Path], images: Sequence,
              settings: BenchSettings, show_progress: bool = True) -> list[ArtifactTimes]:
    """Warm up each predictor, then time `iterations` passes over `images` (decoded [3,H,W] tensors),
    the predictors taking turns call by call. One ArtifactTimes per predictor, in order."""
    batches = batches_of(images, settings.batch_size)
    times = [ArtifactTimes(Path(p).name, str(p), pred.backend, pred.fixed_batch,
                           tuple(pred.input_size) if pred.input_size else None) for pred, p in zip(predictors, paths)]
    warm_up(predictors, batches, settings)
    progress = Progress(settings.iterations * len(batches), "bench", interval=5.0) if show_progress else None
    for _ in range(settings.iterations):
        for batch in batches:
            for predictor, record in zip(predictors, times):
                record.add(*timed_call(predictor, batch, settings.batch_size), len(batch))
            if progress:
                progress.update()
    return times


def machine_info() -> dict:
    """CPU, thread count, library versions and GPU of this process (recorded beside the timings)."""
    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": None, "torch_threads": None, "onnxruntime": None,
            "tensorrt": None, "gpu": None}
    torch = sys.modules.get("torch")  # recorded when a PyTorch predictor loaded it; never imported here
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import tensorrt
        info["tensorrt"] = getattr(tensorrt, "__version__", None)
    except (ImportError, OSError):
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ms(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) * 1000.0


def _summary(record: ArtifactTimes, first_p50_ms: float) -> dict:
    total = _ms(record.total)
    p = np.percentile(total, PERCENTILES)
    latency = {f"p{q}": float(v) for q, v in zip(PERCENTILES, p)}
    latency.update(mean=float(total.mean()), min=float(total.min()), max=float(total.max()))
    return {"name": record.name, "path": record.path, "backend": record.backend,
            "static_batch": record.static_batch, "input_size": list(record.input_size) if record.input_size else None,
            "calls": len(record.total), "images": record.images, "latency_ms": latency,
            "throughput_ips": record.images / float(np.sum(record.total)),
            "stage_median_ms": {s: float(np.median(_ms(record.stages[s]))) for s in STAGES},
            "stage_mean_ms": {s: float(np.mean(_ms(record.stages[s]))) for s in STAGES},
            "speedup_vs_first": first_p50_ms / latency["p50"],
            "samples_ms": {"total": [round(float(v), 4) for v in total],
                           **{s: [round(float(v), 4) for v in _ms(record.stages[s])] for s in STAGES}}}


def bench_report(times: Sequence[ArtifactTimes], settings: BenchSettings, machine: dict, num_images: int) -> dict:
    """The JSON-ready report (schema SCHEMA): machine, settings and one summary per artifact."""
    first_p50 = float(np.percentile(_ms(times[0].total), 50))
    return {"schema": dict(SCHEMA), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
            "settings": {"data": settings.data, "images": num_images, "warmup_calls": settings.warmup,
                         "iterations": settings.iterations, "batch_size": settings.batch_size,
                         "threads": settings.threads,
                         "decode": "images decoded once before timing: decoding is in no stage and in no total",
                         "interleave": "artifacts take turns call by call, in the order given"},
            "units": "latency ms per predict call of batch_size images; throughput images/s of summed call time; "
                     "speedup_vs_first = first artifact's p50 / this p50 (>1 = faster)",
            "stages": list(STAGES),
            "artifacts": [_summary(record, first_p50) for record in times]}


def cluster_section(spans: Sequence[CallSpan], names: Sequence[str], address: str, workers: int) -> dict:
    """The report's "ray" section (bench --ray): throughput in images per second of wall time from the first timed
    call's start to the last one's end across all workers, the same per artifact (its images over its share of
    that wall time: its summed call time / all artifacts'), and each worker's images per second of its own span.
    Images are counted once per artifact that predicted them."""
    wall = max(s.end for s in spans) - min(s.start for s in spans)
    busy = [sum(s.end - s.start for s in spans if s.artifact == k) for k in range(len(names))]
    per_artifact = []
    for k, name in enumerate(names):
        images = sum(s.images for s in spans if s.artifact == k)
        per_artifact.append({"name": name, "images": images,
                             "throughput_ips": images / (wall * busy[k] / sum(busy))})
    per_worker = []
    for worker in sorted({s.worker for s in spans}, key=lambda w: min(s.start for s in spans if s.worker == w)):
        mine = [s for s in spans if s.worker == worker]
        span = max(s.end for s in mine) - min(s.start for s in mine)
        images = sum(s.images for s in mine)
        per_worker.append({"worker": worker, "calls": len(mine), "images": images, "wall_s": span,
                           "images_per_s": images / span})
    return {"address": address, "workers": workers, "wall_s": wall, "images": sum(s.images for s in spans),
            "throughput_ips": sum(s.images for s in spans) / wall, "artifacts": per_artifact,
            "per_worker": per_worker,
            "units": "throughput_ips: images per second of wall time from the first timed call's start to the last "
                     "one's end, across all workers (each image counted once per artifact; warm-up and model loading "
                     "excluded); artifacts[].throughput_ips: its images over its share of that wall time (its summed "
                     "call time / all artifacts'); per_worker: images over that worker's own first-to-last span"}


def summary_lines(report: dict) -> list[str]:
    """The printed table: one row per artifact."""
    s, m = report["settings"], report["machine"]
    threads = f", torch {m['torch_threads']} threads" if m["torch_threads"] else ""
    lines = [f"machine: {m['cpu']} ({m['cpu_count']} CPUs{threads})"
             + (f", GPU {m['gpu']}" if m["gpu"] else ""),
             f"{s['images']} images (decoded before timing), {s['warmup_calls']} warm-up calls, {s['iterations']} "
             f"passes, batch {s['batch_size']}, threads {s['threads'] or 'default'}; artifacts interleaved call by call",
             "latency: ms per predict call; speed-up vs first = first's p50 / this p50 (>1 = faster)",
             f"{'artifact':<24} {'backend':<12} {'p50':>8} {'p90':>8} {'p99':>8} {'img/s':>7} "
             f"{'pre':>7} {'infer':>8} {'post':>7} {'speed-up':>9}"]
    for a in report["artifacts"]:
        lat, st = a["latency_ms"], a["stage_median_ms"]
        lines.append(f"{a['name'][:24]:<24} {a['backend']:<12} {lat['p50']:8.1f} {lat['p90']:8.1f} {lat['p99']:8.1f} "
                     f"{a['throughput_ips']:7.2f} {st['preprocess']:7.1f} {st['inference']:8.1f} "
                     f"{st['postprocess']:7.1f} {a['speedup_vs_first']:8.2f}x")
    if "ray" in report:
        lines += _cluster_lines(report["ray"])
    calls = min(a["calls"] for a in report["artifacts"])
    if calls < 100:
        lines.append(f"note: {calls} calls per artifact; p99 of fewer than 100 samples is close to their maximum")
    return lines


def _cluster_lines(ray: dict) -> list[str]:
    """The printed lines of the "ray" section (cluster_section)."""
    lines = [f"ray ({ray['address']}, {ray['workers']} workers): {ray['images']} images in {ray['wall_s']:.2f} s of "
             f"wall time (first call to last, all workers) = {ray['throughput_ips']:.2f} images/s across the cluster"]
    if len(ray["artifacts"]) > 1:
        lines += [f"  {a['name']}: {a['throughput_ips']:.2f} images/s alone (its share of the wall time)"
                  for a in ray["artifacts"]]
    lines += [f"  worker {w['worker']}: {w['calls']} calls, {w['images']} images, {w['images_per_s']:.2f} images/s"
              for w in ray["per_worker"]]
    return lines


def write_bench_json(report: dict, path: str | Path) -> Path:
    """Write the report as indented JSON, atomically."""
    return write_json(path, report)


# ---------------------------------------------------------------------------------------------- plot

def _nice_step(span: float, ticks: int = 5) -> float:
    """A 1, 2 or 5 x 10^k step giving about `ticks` ticks over span."""
    raw = span / ticks
    power = 10.0 ** np.floor(np.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, font) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def save_bench_plot(report: dict, path: str | Path, size: tuple[int, int] = (900, 420)) -> Path:
    """PNG (width x height pixels): per artifact a bar of its median stage times stacked bottom-up in
    STAGES order, beside it a whisker from p50 to p99 of the total with ticks at p50/p90/p99, the
    speed-up vs the first artifact above, name and backend below."""
    w, h = size
    artifacts = report["artifacts"]
    image = Image.new("RGB", (w, h), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    ax0, ay0, ax1, ay1 = 60, 55, w - 20, h - 50  # plot area
    draw.text((10, 8), "median stage times per call (stacked), p50/p90/p99 total, speed-up vs first (>1 = faster)",
              fill="black", font=font)
    x = ax0
    for stage in STAGES:  # legend
        draw.rectangle([x, 28, x + 10, 38], fill=STAGE_COLORS[stage])
        draw.text((x + 14, 27), stage, fill="black", font=font)
        x += 24 + int(draw.textlength(stage, font=font))
    top = max(max(a["latency_ms"]["p99"], sum(a["stage_median_ms"].values())) for a in artifacts) * 1.15
    step = _nice_step(top)
    scale = (ay1 - ay0) / top  # pixels per ms

    def y_of(ms: float) -> int:
        return int(round(ay1 - ms * scale))

    tick = 0.0
    while tick <= top:
        draw.line([(ax0 - 4, y_of(tick)), (ax1, y_of(tick))], fill=(225, 225, 225) if tick else "black")
        label = f"{tick:g}"
        draw.text((ax0 - 8 - draw.textlength(label, font=font), y_of(tick) - 6), label, fill="black", font=font)
        tick += step
    draw.text((12, ay0 - 14), "ms", fill="black", font=font)
    draw.line([(ax0, ay0), (ax0, ay1)], fill="black")
    slot = (ax1 - ax0) / len(artifacts)
    bar = max(8, min(90, int(slot * 0.4)))
    for i, a in enumerate(artifacts):
        left = int(ax0 + i * slot + (slot - bar) / 2 - 10)
        base, y_bottom = 0.0, ay1
        for stage in STAGES:
            base += a["stage_median_ms"][stage]
            # at least one pixel row per stage, so a fast stage (often preprocess) stays visible
            y_top = min(y_of(base), y_bottom)
            draw.rectangle([left, y_top, left + bar, y_bottom], fill=STAGE_COLORS[stage])
            y_bottom = y_top - 1
        lat = a["latency_ms"]
        wx = left + bar + 12  # the latency whisker
        draw.line([(wx, y_of(lat["p50"])), (wx, y_of(lat["p99"]))], fill="black", width=2)
        for q in PERCENTILES:
            y = y_of(lat[f"p{q}"])
            draw.line([(wx - 5, y), (wx + 5, y)], fill="black", width=2)
        draw.text((wx + 8, y_of(lat["p50"]) - 6), "p50", fill=(90, 90, 90), font=font)
        draw.text((wx + 8, y_of(lat["p99"]) - 6), "p99", fill=(90, 90, 90), font=font)
        ratio = f"{a['speedup_vs_first']:.2f}x"
        draw.text((left + bar / 2 - draw.textlength(ratio, font=font) / 2, y_bottom - 15), ratio, fill="black",
                  font=font)
        for row, text in enumerate((a["name"], a["backend"])):
            text = _fit(draw, text, slot - 6, font)
            centre = ax0 + (i + 0.5) * slot
            draw.text((centre - draw.textlength(text, font=font) / 2, ay1 + 8 + 16 * row), text, fill="black",
                      font=font)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
