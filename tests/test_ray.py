"""`check --ray`, `eval --ray` and `bench --ray` (runtime/distributed.py): the images spread over Ray workers give
the single-process report, also when a worker dies mid-run; bench counts every image once and gathers every
worker's latency samples; without ray, `--ray` exits 3 naming the extra.

One local Ray (2 CPUs, no dashboard) serves the module; `--ray` joins it. Model: a seeded ResNet-18-FPN with small
heads at 128-160 px and its ONNX export (tests/conftest.py `small_heads_r18`), on 4 synthetic images. A Ray worker asks
for one CPU, so Ray runs PyTorch in it on one thread (OMP_NUM_THREADS=1); the single-process runs here use
one thread too (a different thread count changes float sums in the last bits, and so the report's decimals).
"""

from __future__ import annotations

import functools
import json
import os
import sys

import pytest
import torch

from maskrcnn_deploy.model.data.images import list_images
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime import parity
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_BACKEND_UNAVAILABLE, EXIT_OK
from maskrcnn_deploy.runtime.distributed import check_image, check_on_ray
from maskrcnn_deploy.runtime.predictor import STAGES

from seeded_models import pseudo_ground_truth

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def made(small_heads_r18, tmp_path_factory):
    """Checkpoint, its ONNX graph (tests/conftest.py `small_heads_r18`, shared), 4 val images with pseudo ground
    truth, and the single-process check report."""
    root = tmp_path_factory.mktemp("ray")
    make_synthetic_dataset(root / "data", num_train=1, num_val=4, seed=5, image_size=(150, 190))
    checkpoint, graph = small_heads_r18.checkpoint, small_heads_r18.graph("custom")
    gt = pseudo_ground_truth(checkpoint, list_images(root / "data" / "val"), root / "data" / "val_pseudo.json",
                             NUM_CLASSES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a one-CPU Ray worker
    try:
        assert main(["check", str(checkpoint), str(graph), "--data", str(gt), "--threads", "1",
                     "--report", str(root / "single.json")]) == EXIT_OK
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "checkpoint": checkpoint, "graph": graph, "gt": gt,
            "single": json.loads((root / "single.json").read_text())}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_check_on_ray_gives_the_single_process_report(made, local_ray, tmp_path):
    report = tmp_path / "ray.json"
    assert main(["check", str(made["checkpoint"]), str(made["graph"]), "--data", str(made["gt"]), "--threads", "1",
                 "--ray", "--ray-workers", "2", "--report", str(report)]) == EXIT_OK
    ray_report = json.loads(report.read_text())
    assert ray_report["images"] == 4 and ray_report["ap"]["reference"]["bbox"]["AP"] > 0.2
    assert ray_report == made["single"]  # the report holds no timing field: equal as a whole


def _dies_once_on_the_third_image(marker: str, state, path: str) -> dict:
    """check_image, but the worker process exits (no cleanup, as a killed one) on the third image, once."""
    if path.endswith("000002.png") and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return check_image(state, path)


def test_a_worker_dying_mid_run_is_restarted_and_the_report_is_unchanged(made, local_ray):
    """Ray restarts the dead actor (max_restarts) and reruns its task (max_task_retries); the marker proves the
    worker did exit."""
    marker = made["root"] / "worker-died"
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    assert sorted(p.name for p in list_images(made["root"] / "data" / "val"))[2].endswith("000002.png")
    run = check_on_ray(made["checkpoint"], made["graph"], made["gt"], parity.tolerances_from("fp32"), threads=1,
                       workers=2, step=functools.partial(_dies_once_on_the_third_image, str(marker)))
    assert marker.exists()
    assert run.report.to_dict() == made["single"]


def test_eval_on_ray_gives_the_single_process_metrics(made, local_ray, tmp_path):
    single, ray = tmp_path / "single.json", tmp_path / "ray.json"
    assert main(["eval", str(made["graph"]), "--data", str(made["gt"]), "--out", str(single)]) == 0
    assert main(["eval", str(made["graph"]), "--data", str(made["gt"]), "--out", str(ray), "--ray"]) == 0
    metrics = [json.loads(p.read_text()) for p in (single, ray)]
    for m in metrics:
        m.pop("eval_wall_s")
    assert metrics[0] == metrics[1] and metrics[0]["num_images"] == 4 and metrics[0]["bbox"]["AP"] > 0.2


def test_bench_on_ray_counts_every_image_once_and_gathers_every_workers_samples(made, local_ray, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(made["graph"]), "--data", str(made["gt"]), "--iterations", "2", "--warmup", "1",
                 "--threads", "1", "--ray", "--ray-workers", "2", "--json", str(out)]) == EXIT_OK
    report = json.loads(out.read_text())
    (artifact,) = report["artifacts"]
    ray = report["ray"]
    assert (ray["address"], ray["workers"], report["settings"]["images"]) == ("local", 2, 4)
    assert artifact["images"] == artifact["calls"] == ray["images"] == ray["artifacts"][0]["images"] == 4 * 2
    assert all(len(artifact["samples_ms"][k]) == 4 * 2 for k in ("total", *STAGES))
    assert 1 <= len(ray["per_worker"]) <= 2 and sum(w["images"] for w in ray["per_worker"]) == 4 * 2
    assert sum(w["calls"] for w in ray["per_worker"]) == artifact["calls"]
    assert ray["throughput_ips"] == pytest.approx(8 / ray["wall_s"]) and ray["throughput_ips"] > 0
    assert ray["artifacts"][0]["throughput_ips"] == pytest.approx(ray["throughput_ips"])  # one artifact: all the wall
    assert all(w["images_per_s"] > 0 and 0 < w["wall_s"] <= ray["wall_s"] for w in ray["per_worker"])
    lat = artifact["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"] and artifact["backend"] == "onnxruntime"
    assert report["machine"]["cpu_count"] == os.cpu_count()  # a worker's machine: this one
    assert "images/s across the cluster" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["check", "a.onnx", "b.onnx", "--data", "d.json", "--ray"],
                                     ["eval", "a.onnx", "--data", "d.json", "--ray", "auto"],
                                     ["bench", "a.onnx", "--data", "d.json", "--ray", "--ray-workers", "2"]])
def test_ray_missing_exits_3_naming_the_extra(monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ModuleNotFoundError
    assert main(command) == EXIT_BACKEND_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and f"`maskrcnn-deploy {command[0]} --ray` needs Ray" in err
    assert err.endswith("pip install 'maskrcnn-deploy[ray]'"), err
