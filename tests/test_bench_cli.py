"""`maskrcnn-deploy bench` and the predictor's stage timing: a seeded ResNet-18 checkpoint and its ONNX export
(tests/conftest.py `small_heads_r18`) on three tiny synthetic images; hand-made timings for the report numbers and
the chart."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_deploy.model.data.coco import load_image
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime import bench
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.load import load
from maskrcnn_deploy.runtime.predictor import STAGES

NUM_IMAGES = 3

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    paths = make_synthetic_dataset(out, num_train=0, num_val=NUM_IMAGES, seed=3, image_size=(150, 190))
    coco = json.loads(open(paths["val"]).read())
    return paths["val"], [out / "val" / im["file_name"] for im in coco["images"]]


@pytest.fixture(scope="module")
def artifacts(small_heads_r18):
    """A seeded r18 checkpoint (narrow heads, 20 detections, 200 proposals: cheap to run) and its static ONNX export
    (tests/conftest.py `small_heads_r18`, shared: r18.pt, r18_custom_static.onnx)."""
    return small_heads_r18.checkpoint, small_heads_r18.graph("custom")


def test_predict_timings_cover_the_call_and_change_no_result(artifacts, data):
    predictor = load(artifacts[1])  # static batch 1: two images are two graph runs, their times summed
    images = [load_image(p) for p in data[1][:2]]
    plain = predictor.predict(images)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    timed = predictor.predict(images, timings=timings)
    wall = time.perf_counter() - t0
    assert list(timings) == list(STAGES) and all(v > 0 for v in timings.values())
    assert sum(timings.values()) <= wall
    assert timings["inference"] > 0.5 * wall  # the graph is most of the call; a stage spanning all would be 1.0
    assert len(plain) == len(timed) == 2 and len(plain[0]["scores"]) > 0
    for a, b in zip(plain, timed):
        for key in ("boxes", "scores", "labels", "masks"):
            assert np.array_equal(a[key], b[key])
        assert a["rles"] == b["rles"]
    before = dict(timings)
    predictor.predict(images[:1], timings=timings)  # adds to what is there
    assert all(timings[s] > before[s] for s in STAGES)


def test_bench_cli_writes_report_and_plot(artifacts, data, tmp_path, capsys):
    ckpt, onnx_path = artifacts
    code = main(["bench", str(ckpt), str(onnx_path), "--data", str(data[0]), "--iterations", "2", "--warmup", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith((ckpt.name, onnx_path.name))]
    assert [r[:2] for r in rows] == [["r18.pt", "pytorch"], ["r18_custom_static.onnx", "onnxruntime"]]
    assert rows[0][-1] == "1.00x"

    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["schema"] == {"name": "maskrcnn-deploy.bench", "version": 1}
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert report["machine"]["torch"] == torch.__version__
    assert (report["settings"]["images"], report["settings"]["iterations"], report["settings"]["warmup_calls"]) == \
        (NUM_IMAGES, 2, 1)
    first, second = report["artifacts"]
    assert (first["backend"], second["backend"]) == ("pytorch", "onnxruntime")
    assert (second["static_batch"], second["input_size"]) == (1, [128, 160])
    for a in report["artifacts"]:
        lat, samples = a["latency_ms"], a["samples_ms"]
        assert a["calls"] == a["images"] == NUM_IMAGES * 2
        assert all(len(samples[k]) == NUM_IMAGES * 2 for k in ("total", *STAGES))
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["p50"] == pytest.approx(np.percentile(samples["total"], 50), abs=1e-3)
        assert a["throughput_ips"] == pytest.approx(1000 * a["images"] / sum(samples["total"]), rel=1e-4)
        for s in STAGES:
            assert a["stage_median_ms"][s] == pytest.approx(np.median(samples[s]), abs=1e-3)
            assert a["stage_median_ms"][s] > 0
        # every stage inside the call's total, and together nearly all of it: the time outside the
        # stages is loop overhead (~0.1 ms), less than the smallest stage (preprocess, >= 0.3 ms here)
        gaps = np.asarray(samples["total"]) - sum(np.asarray(samples[s]) for s in STAGES)
        assert gaps.min() >= -1e-3 and np.median(gaps) < 0.3
    assert first["speedup_vs_first"] == 1.0
    assert second["speedup_vs_first"] == pytest.approx(first["latency_ms"]["p50"] / second["latency_ms"]["p50"])

    with Image.open(tmp_path / "bench.png") as png:
        assert png.size == (900, 420)
        pixels = np.asarray(png.convert("RGB"))[50:]  # below the legend
    for half in (pixels[:, :450], pixels[:, 450:]):  # one bar per artifact, every stage drawn
        for stage in STAGES:
            assert (half == bench.STAGE_COLORS[stage]).all(axis=-1).sum() > 20, stage


def test_bench_threads_apply_during_the_run_only(artifacts, data, tmp_path):
    threads = torch.get_num_threads()
    code = main(["bench", str(artifacts[1]), "--data", str(data[1][0].parent), "--max-images", "1", "--warmup", "0",
                 "--iterations", "1", "--threads", "1", "--json", str(tmp_path / "b.json")])
    assert code == 0 and torch.get_num_threads() == threads
    report = json.loads((tmp_path / "b.json").read_text())
    assert (report["settings"]["threads"], report["machine"]["torch_threads"]) == (1, 1)
    assert report["artifacts"][0]["calls"] == 1 and not (tmp_path / "bench.png").exists()


def test_bench_refuses_bad_input(artifacts, data, tmp_path, capsys):
    ckpt, _ = artifacts
    assert main(["bench", str(tmp_path / "missing.onnx"), str(ckpt), "--data", str(data[0])]) == 2
    assert "no such artifact" in capsys.readouterr().err
    odd = tmp_path / "model.tflite"
    odd.write_bytes(b"x")
    assert main(["bench", str(odd), "--data", str(data[0])]) == 2
    assert "cannot tell the backend" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", str(ckpt), "--data", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["bench", str(ckpt), "--data", str(data[0]), "--iterations", "0"]) == 2
    assert "--iterations must be at least 1" in capsys.readouterr().err


class _Recorder:
    """Stands in for a Predictor: sleeps a fixed time per stage and logs its calls."""

    def __init__(self, name: str, log: list, seconds: float):
        self.name, self.log, self.seconds = name, log, seconds
        self.backend, self.fixed_batch, self.input_size = "fake", None, None

    def predict(self, images, batch_size=1, timings=None):
        self.log.append((self.name, len(images), timings is not None))
        if timings is not None:
            for s in STAGES:
                timings[s] = timings.get(s, 0.0) + self.seconds
        return [{} for _ in images]


def test_run_bench_warms_up_then_interleaves_call_by_call():
    log: list = []
    images = [torch.zeros(3, 4, 4)] * 5
    times = bench.run_bench([_Recorder("a", log, 0.001), _Recorder("b", log, 0.002)], ["a.onnx", "b.pt"], images,
                            bench.BenchSettings(warmup=2, iterations=2, batch_size=2), show_progress=False)
    warm = [("a", 2, False), ("a", 2, False), ("b", 2, False), ("b", 2, False)]
    timed = [(name, n, True) for _ in range(2) for n in (2, 2, 1) for name in ("a", "b")]
    assert log == warm + timed
    assert [t.images for t in times] == [10, 10] and [len(t.total) for t in times] == [6, 6]
    assert times[1].stages["inference"] == [0.002] * 6


def test_report_numbers_from_known_samples():
    machine = bench.machine_info()
    a = bench.ArtifactTimes("a.pt", "a.pt", "pytorch", None, None, images=100)
    a.total = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    a.stages = {s: [t / 3 for t in a.total] for s in STAGES}
    b = bench.ArtifactTimes("b.onnx", "b.onnx", "onnxruntime", 1, (128, 160), images=100)
    b.total = [t / 4 for t in a.total]
    b.stages = {s: [t / 3 for t in b.total] for s in STAGES}
    report = bench.bench_report([a, b], bench.BenchSettings(iterations=1), machine, num_images=100)
    ra, rb = report["artifacts"]
    assert ra["latency_ms"]["p50"] == pytest.approx(50.5)   # numpy's linear interpolation
    assert ra["latency_ms"]["p90"] == pytest.approx(90.1)
    assert ra["latency_ms"]["p99"] == pytest.approx(99.01)
    assert ra["throughput_ips"] == pytest.approx(100 / 5.05)
    assert ra["stage_median_ms"]["inference"] == pytest.approx(50.5 / 3)
    assert (ra["speedup_vs_first"], rb["speedup_vs_first"]) == (1.0, pytest.approx(4.0))
    assert bench.summary_lines(report)[-1].split()[-1] == "4.00x"
    assert "p99 of fewer" not in "\n".join(bench.summary_lines(report))


def test_cluster_section_numbers_from_known_spans():
    """bench --ray's "ray" section: wall time from the first call's start to the last one's end, the artifacts'
    shares of it by summed call time, each worker over its own span."""
    spans = [bench.CallSpan("w1", 0, 2, 10.0, 11.0), bench.CallSpan("w1", 1, 2, 11.0, 14.0),   # w1: 10 -> 14 s
             bench.CallSpan("w2", 0, 2, 12.0, 13.0), bench.CallSpan("w2", 1, 2, 13.0, 16.0)]   # w2: 12 -> 16 s
    ray = bench.cluster_section(spans, ["a.onnx", "b.onnx"], "auto", 2)
    assert (ray["address"], ray["workers"], ray["wall_s"], ray["images"]) == ("auto", 2, 6.0, 8)
    assert ray["throughput_ips"] == pytest.approx(8 / 6)
    a, b = ray["artifacts"]  # a: 2 of the 8 call-seconds, so a quarter of the wall time; b: three quarters
    assert (a["images"], b["images"]) == (4, 4)
    assert (a["throughput_ips"], b["throughput_ips"]) == (pytest.approx(4 / 1.5), pytest.approx(4 / 4.5))
    assert [(w["worker"], w["calls"], w["images"], w["wall_s"], w["images_per_s"]) for w in ray["per_worker"]] == \
        [("w1", 2, 4, 4.0, 1.0), ("w2", 2, 4, 4.0, 1.0)]
    machine = bench.machine_info()
    times = bench.ArtifactTimes("a.onnx", "a.onnx", "onnxruntime", 1, None, total=[1.0, 1.0], images=4,
                                stages={s: [0.3, 0.3] for s in STAGES})
    report = bench.bench_report([times], bench.BenchSettings(), machine, num_images=4) | {"ray": ray}
    lines = bench.summary_lines(report)
    assert "8 images in 6.00 s of wall time (first call to last, all workers) = 1.33 images/s across the cluster" \
        in lines[-6] and lines[-5].endswith("2.67 images/s alone (its share of the wall time)")
    assert lines[-2] == "  worker w2: 2 calls, 4 images, 1.00 images/s"


def test_plot_bars_are_proportional_to_the_stage_medians(tmp_path):
    def artifact(name, inference, p99):
        return {"name": name, "backend": "onnxruntime", "speedup_vs_first": 1.0,
                "stage_median_ms": {"preprocess": 5.0, "inference": inference, "postprocess": 10.0},
                "latency_ms": {"p50": inference + 15, "p90": inference + 20, "p99": p99}}
    report = {"artifacts": [artifact("slow.onnx", 200.0, 300.0), artifact("fast.onnx", 50.0, 80.0)]}
    bench.save_bench_plot(report, tmp_path / "p.png", size=(600, 400))
    pixels = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert pixels.shape == (400, 600, 3)
    pixels = pixels[50:]  # below the legend
    orange = (pixels == bench.STAGE_COLORS["inference"]).all(axis=-1)
    heights = [orange[:, :300].any(axis=1).sum(), orange[:, 300:].any(axis=1).sum()]
    assert heights[0] == pytest.approx(4 * heights[1], abs=4)
    assert heights[0] > 150  # 200 of the 345 ms axis over 295 pixels
