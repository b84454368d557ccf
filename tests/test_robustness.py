"""Mixed inputs and interrupted runs: unreadable images reported by name, no half-written outputs,
and calibration, evaluation and range collection that resume where a Ctrl-C stopped them.

Interrupts are simulated by making a function raise KeyboardInterrupt after k calls; `main` maps that
to exit code 130, as it does for a real Ctrl-C. Model: a seeded ResNet-18-FPN with small heads at
128-160 px (as tests/test_calibration.py), shared by the module.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_deploy.calibration import budget as budget_module
from maskrcnn_deploy.calibration import ranges as ranges_module
from maskrcnn_deploy.calibration.budget import search_budget
from maskrcnn_deploy.calibration.data import CalibrationBatches
from maskrcnn_deploy.calibration.deploy_graph import load_float_graph
from maskrcnn_deploy.calibration.ranges import collect_ranges, region_tensors
from maskrcnn_deploy.calibration.regions import Region, find_region
from maskrcnn_deploy.common.files import Journal, atomic_write_all, write_json
from maskrcnn_deploy.common.interrupts import deferred_interrupt
from maskrcnn_deploy.export.preprocess import ImageFitError, preprocess_images
from maskrcnn_deploy.model.data.coco import ImageLoadError, list_images, load_image
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime import evaluate as evaluate_module
from maskrcnn_deploy.runtime import predictor as predictor_module
from maskrcnn_deploy.runtime.cli import EXIT_BAD_INPUT, main
from maskrcnn_deploy.runtime.load import load
from maskrcnn_deploy.runtime.visualize import save_png

from seeded_models import SMALL_HEADS, pseudo_ground_truth

NUM_CLASSES = 4
SMALL = SMALL_HEADS  # the model's resnet18_fpn overrides (tests/conftest.py `small_heads_r18`)
EXIT_INTERRUPTED = 130


@pytest.fixture(scope="module")
def tiny(small_heads_r18, tmp_path_factory):
    """Seeded checkpoint, its ONNX export, synthetic data and pseudo ground truth (the model's own top
    detections, so that AP is well above 0 and changes when results change)."""
    root = tmp_path_factory.mktemp("robust")
    paths = make_synthetic_dataset(root / "data", num_train=4, num_val=4, seed=5, image_size=(150, 190))
    checkpoint = small_heads_r18.checkpoint  # tests/conftest.py: shared (read only)
    val_images = list_images(root / "data" / "val")
    gt = pseudo_ground_truth(checkpoint, val_images, root / "data" / "val_pseudo.json", NUM_CLASSES)
    return {"root": root, "checkpoint": checkpoint, "train": paths["train"], "gt": gt,
            "val_images": val_images}


@pytest.fixture(scope="module")
def onnx_model(small_heads_r18):
    return small_heads_r18.graph("custom")  # tests/conftest.py: the checkpoint's export, shared (read only)


def _interrupt_after(k: int, function):
    """`function` wrapped to count its calls and raise KeyboardInterrupt on call k + 1."""
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        if wrapper.calls > k:
            raise KeyboardInterrupt
        return function(*args, **kwargs)
    wrapper.calls = 0
    return wrapper


def _counting(function):
    return _interrupt_after(10 ** 9, function)


def _two_good_two_unreadable(folder: Path, images: list[Path]) -> Path:
    """A folder with copies of two readable images, an empty empty.png and a noise.jpg no decoder reads."""
    folder.mkdir()
    for path in images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "noise.jpg").write_bytes(os.urandom(200))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- reading images

def test_load_image_makes_every_mode_rgb_and_names_each_failure(tmp_path, monkeypatch):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "gray.png")
    as_bytes = (load_image(tmp_path / "gray.png") * 255).round().byte().numpy()
    np.testing.assert_array_equal(as_bytes, np.stack([gray] * 3))
    deep = np.array([[0, 32768, 65535]], dtype=np.uint16)  # 16-bit: PIL's convert("RGB") would clip to 255
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png")[0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert (load_image(tmp_path / "rgba.png") * 255).round().permute(1, 2, 0).tolist() == \
        [[[10, 20, 30], [200, 100, 50]]]  # alpha dropped, stored colours kept
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "one.jpg", quality=100)
    assert load_image(tmp_path / "one.jpg").shape == (3, 1, 1)

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(os.urandom(300))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "cut.png")
    png = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[:len(png) // 2])  # a download cut off midway
    reasons = {"empty.png": "file is empty (0 bytes)", "noise.jpg": "not an image PIL can decode",
               "cut.png": "truncated"}
    for name, reason in reasons.items():
        with pytest.raises(ImageLoadError) as err:
            load_image(tmp_path / name)
        assert str(err.value).startswith(f"cannot read image {tmp_path / name}: ") and reason in str(err.value)
        assert "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2)  # 12 pixels > 2 x 2: PIL's decompression-bomb error
    with pytest.raises(ImageLoadError, match="gray.png: .*decompression bomb"):
        load_image(tmp_path / "gray.png")
    (tmp_path / ".gray.png.x1.tmp").write_bytes(b"")
    (tmp_path / "._gray.png").write_bytes(b"")  # macOS resource fork: hidden, not an image
    assert [p.name for p in list_images(tmp_path)] == ["cut.png", "deep.png", "empty.png", "gray.png", "noise.jpg",
                                                       "one.jpg", "rgba.png"]


def test_predict_draws_every_readable_image_of_a_mixed_folder(tiny, tmp_path, capsys, monkeypatch):
    """PNG, JPEG, grayscale, RGBA, corrupt, empty, 1x1, 6000x4000 and a 3000x1 sliver in one folder: the
    unreadable files and the image that was read but does not fit the model are named apart."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    scene = Image.open(tiny["val_images"][0]).convert("RGB")
    scene.save(folder / "photo.png")
    scene.save(folder / "photo.jpg", quality=90)  # same stem: both outputs must survive
    scene.convert("L").save(folder / "gray.png")
    scene.convert("RGBA").save(folder / "rgba.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(500))
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (1, 1), (120, 30, 200)).save(folder / "one.png")
    Image.fromarray(np.asarray(scene.resize((6000, 4000), Image.NEAREST))).save(folder / "huge.jpg", quality=80)
    Image.new("RGB", (3000, 1), (10, 200, 30)).save(folder / "sliver.png")  # resized, its height rounds to 0 px
    sizes = {"photo.png.png": (190, 150), "photo.jpg.png": (190, 150), "gray.png": (190, 150),
             "rgba.png": (190, 150), "one.png": (1, 1), "huge.png": (6000, 4000)}

    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["predict", str(tiny["checkpoint"]), str(folder), "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2:] == ["2 of 9 images could not be read: corrupt.jpg, empty.png",
                        "1 of 9 images do not fit this model: sliver.png"]
    assert err[-3].startswith(f"cannot use image {folder / 'sliver.png'}: a 3000x1 image is too thin for this model: "
                              "it does not fit")
    assert err[0].startswith(f"cannot read image {folder / 'corrupt.jpg'}: ") and len(err[0].split(": ")[-1]) > 5
    assert err[1] == f"cannot read image {folder / 'empty.png'}: file is empty (0 bytes)"
    assert sorted(os.listdir(out)) == sorted(sizes)  # nothing else: no temporaries, no partial files
    for name, size in sizes.items():
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.size == size and png.mode == "RGB"

    # the 1x1 image is scaled up to 128x128 for the model: every candidate's numbers are finite
    model = load(tiny["checkpoint"])
    one = model.predict([load_image(folder / "one.png")], min_score=0.0)[0]
    assert len(one["scores"]) == SMALL["detections_per_img"] and one["masks"].shape[1:] == (1, 1)
    assert np.isfinite(one["boxes"]).all() and np.isfinite(one["scores"]).all()
    assert (one["boxes"] >= 0).all() and (one["boxes"] <= 1).all()
    # an image so thin that resizing leaves no pixel row is refused by name, not a torch traceback
    with pytest.raises(ImageFitError, match=r"a 300x1 image is too thin for this model"):
        model.predict([torch.rand(3, 1, 300)])
    # the 6000x4000 one: only the kept detections' masks are pasted at full size
    pasted = []

    def paste(masks, boxes, size, threshold=None, out=None):
        pasted.append((masks.shape[0], size))
        return out

    monkeypatch.setattr(predictor_module, "paste_masks", paste)
    image = load_image(folder / "huge.jpg")
    raw = model.run_raw(*preprocess_images([image], model.config, None))
    scores = raw["scores"][0][:int(raw["num_detections"][0])]
    threshold = float(np.median(scores))
    huge = model.predict([image], min_score=threshold)[0]
    kept = int((scores >= threshold).sum())
    # in chunks of at most PASTE_BUDGET_BYTES of float32 masks
    per_chunk = predictor_module.PASTE_BUDGET_BYTES // (4 * 4000 * 6000)
    assert sum(n for n, _ in pasted) == kept and len(huge["scores"]) == kept
    assert {size for _, size in pasted} == {(4000, 6000)} and max(n for n, _ in pasted) == min(per_chunk, kept)
    assert 0 < kept < len(scores) == SMALL["detections_per_img"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tiny, tmp_path, monkeypatch):
    target = tmp_path / "drawn.png"
    save_png(np.full((5, 7, 3), 9, np.uint8), target)
    before = target.read_bytes()
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()  # a normal file, not mkstemp's 0600
    real_save = Image.Image.save

    def half_then_ctrl_c(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:20])
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_png(np.ones((5, 7, 3), np.uint8), target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["drawn.png"]
    monkeypatch.setattr(Image.Image, "save", real_save)

    # files that belong together: the second writer failing leaves the first file's old version too
    write_json(tmp_path / "a.json", {"run": 1})
    write_json(tmp_path / "b.json", {"run": 1})

    def fail(tmp):
        tmp.write_text("{\"ru")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_all({tmp_path / "a.json": lambda tmp: tmp.write_text("{\"run\": 2}"), tmp_path / "b.json": fail})
    assert [json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json")] == [{"run": 1}, {"run": 1}]
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json", "drawn.png"]

    # through the CLI: Ctrl-C while the second prediction is written -> 130, the first one complete
    folder = tmp_path / "two"
    folder.mkdir()
    for path in tiny["val_images"][:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    calls = {"n": 0}

    def second_is_interrupted(self, fp, *args, **kwargs):
        calls["n"] += 1
        real_save(self, fp, *args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", second_is_interrupted)
    out = tmp_path / "out"
    assert main(["predict", str(tiny["checkpoint"]), str(folder), "--out", str(out)]) == EXIT_INTERRUPTED
    assert os.listdir(out) == [tiny["val_images"][0].name]
    with Image.open(out / tiny["val_images"][0].name) as png:
        png.load()
        assert png.size == (190, 150)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_ctrl_c_during_native_work_is_raised_when_it_returns():
    """The first SIGINT inside `deferred_interrupt` is held until the block ends (ONNX Runtime would
    abort on a KeyboardInterrupt raised in the custom op's Python callback); a second one is immediate."""
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("finished the run")
    assert steps == ["finished the run"]
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("not reached")
    assert steps == ["finished the run"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------- journals

def test_journal_resumes_its_own_inputs_only(tmp_path, capsys):
    path = tmp_path / "run.progress.jsonl"
    journal = Journal(path, key="k1")
    journal.record("a", {"segm": 1.5})
    journal.record(7, [1, 2])
    journal.close()
    with open(path, "a") as f:
        f.write('{"step": "b", "val')  # the line an interrupt cut off
    again = Journal(path, key="k1")
    assert again.entries == {"a": {"segm": 1.5}, "7": [1, 2]} and 7 in again and again.resumed == 2
    again.record("b", 3)
    again.close()
    assert [json.loads(line) for line in path.read_text().splitlines()][1:] == \
        [{"step": "a", "value": {"segm": 1.5}}, {"step": "7", "value": [1, 2]}, {"step": "b", "value": 3}]
    capsys.readouterr()
    other = Journal(path, key="k2")
    assert other.entries == {} and "other inputs" in capsys.readouterr().err
    assert Journal(path, key="k1", resume=False).entries == {}
    other.remove()
    assert not path.exists()


def test_budget_search_resumes_from_its_journal(tmp_path, monkeypatch, capsys):
    """Stand-in evaluations (exact): an interrupt after k measurements, then a rerun that makes only the rest."""
    cost = {"a": 0.05, "b": 0.9, "c": 0.3, "d": 0.1, "e": 0.2}

    class Graph:
        model = "float"

    monkeypatch.setattr(budget_module, "quantize_qdq", lambda model, amax, nodes: tuple(sorted(nodes)))

    def evaluate(nodes, evalset):
        nodes = () if nodes == "float" else nodes
        return {"segm": 50.0 - sum(cost[n] for n in nodes), "bbox": 60.0 - len(nodes)}

    region = Region({name: name for name in cost})
    reference = search_budget(Graph(), {}, region, None, max_ap_drop=0.2, evaluate=evaluate)
    total = 1 + len(cost) + len(reference.steps)  # baseline, sweep, search steps
    assert reference.float_groups == ["b", "c", "e"] and total == 10

    path = tmp_path / "int8.onnx.budget-progress.jsonl"
    for k in (3, 7):  # in the sweep; in the search
        path.unlink(missing_ok=True)
        interrupted = _interrupt_after(k, evaluate)
        with pytest.raises(KeyboardInterrupt):
            search_budget(Graph(), {}, region, None, max_ap_drop=0.2, evaluate=interrupted,
                          journal=Journal(path, "key"))
        assert len(path.read_text().splitlines()) == 1 + k  # header + k measurements
        capsys.readouterr()
        rest = _counting(evaluate)
        resumed = search_budget(Graph(), {}, region, None, max_ap_drop=0.2, evaluate=rest,
                                journal=Journal(path, "key"))
        assert rest.calls == total - k
        assert (resumed.sweep, resumed.float_groups, resumed.steps, resumed.final, resumed.model) == \
            (reference.sweep, reference.float_groups, reference.steps, reference.final, reference.model)
        if k == 3:
            assert "resuming: 2 of 5 groups already measured" in capsys.readouterr().out


# ---------------------------------------------------------------- calibration

def test_range_collection_resumes_with_identical_statistics(tiny, onnx_model, tmp_path, monkeypatch):
    graph = load_float_graph(onnx_model)
    feeds = CalibrationBatches.from_data(tiny["train"], graph)
    tensors = region_tensors(graph.model, find_region(graph.model).nodes())
    monkeypatch.setattr(ranges_module, "SAVE_EVERY_S", 0.0)  # save after every batch
    progress = tmp_path / "m.int8.onnx.ranges-progress.npz"
    real_feed = ranges_module._OneFeed
    method = "percentile"  # histograms; test_calibrate_resumes_the_sweep... restores "max" statistics
    reference = collect_ranges(graph.model, feeds, method, tensors, show_progress=False)
    monkeypatch.setattr(ranges_module, "_OneFeed", _interrupt_after(3, real_feed))
    with pytest.raises(KeyboardInterrupt):
        collect_ranges(graph.model, feeds, method, tensors, show_progress=False, progress_file=progress, key="k")
    with np.load(progress) as saved:
        assert int(saved["done"]) == 3
    rest = _counting(real_feed)
    monkeypatch.setattr(ranges_module, "_OneFeed", rest)
    resumed = collect_ranges(graph.model, feeds, method, tensors, show_progress=False, progress_file=progress, key="k")
    assert rest.calls == len(feeds) - 3 == 1
    assert resumed == reference and len(reference) > 20  # bit for bit: the same histograms, continued


def test_calibrate_names_every_unreadable_image_before_any_work(tiny, onnx_model, tmp_path, capsys):
    folder = _two_good_two_unreadable(tmp_path / "calib", tiny["val_images"])
    capsys.readouterr()
    code = main(["calibrate", str(onnx_model), "--data", str(folder), "-o", str(tmp_path / "m.int8.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT and len(err) == 3
    assert err[0] == f"cannot read image {folder / 'empty.png'}: file is empty (0 bytes)"
    assert err[1].startswith(f"cannot read image {folder / 'noise.jpg'}: not an image PIL can decode")
    assert err[2].startswith("maskrcnn-deploy: error: 2 of 4 images could not be read: empty.png, noise.jpg: ")
    assert sorted(os.listdir(tmp_path)) == ["calib"]  # refused before writing anything


def test_calibrate_resumes_the_sweep_and_keeps_earlier_outputs(tiny, onnx_model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.int8.onnx"
    command = ["calibrate", str(onnx_model), "--data", str(tiny["train"]), "-o", str(out), "--method", "max",
               "--eval-data", str(tiny["gt"]), "--eval-images", "1", "--max-ap-drop", "100", "--threads", "1"]
    from maskrcnn_deploy.calibration import calibrate as calibrate_module

    def mask_head_only(model, with_logits=False):  # 5 of the 15 layer groups: the same flow, a shorter sweep
        region = find_region(model, with_logits)
        return Region({n: g for n, g in region.groups.items() if g.startswith("roi_heads.mask_")})

    monkeypatch.setattr(calibrate_module, "find_region", mask_head_only)
    real_evaluate = evaluate_module.graph_ap  # what the calibrate command's evaluator (graph_evaluator) calls
    complete = _counting(real_evaluate)
    monkeypatch.setattr(evaluate_module, "graph_ap", complete)
    assert main(command) == 0
    earlier = _files(tmp_path)
    assert sorted(earlier) == ["m.int8.cache", "m.int8.onnx", "m.int8.precision.json", "m.int8.precision.md",
                               "m.int8.ranges.json"]  # no progress files left after success
    groups = json.loads(earlier["m.int8.precision.json"])["summary"]["groups"]
    assert complete.calls == 1 + len(groups) + 1 and len(groups) == 5  # baseline, sweep, one search step

    k = 3  # the baseline and two groups measured, then Ctrl-C
    monkeypatch.setattr(evaluate_module, "graph_ap", _interrupt_after(k, real_evaluate))
    assert main(command) == EXIT_INTERRUPTED
    journal = tmp_path / "m.int8.onnx.budget-progress.jsonl"
    assert [json.loads(line).get("step") for line in journal.read_text().splitlines()] == \
        [None, "baseline", f"sweep:{groups[0]}", f"sweep:{groups[1]}"]
    assert _files(tmp_path) == {**earlier, journal.name: journal.read_bytes(),
                                "m.int8.onnx.ranges-progress.npz": (tmp_path / "m.int8.onnx.ranges-progress.npz")
                                .read_bytes()}  # the earlier outputs untouched, no temporaries

    rest = _counting(real_evaluate)
    monkeypatch.setattr(evaluate_module, "graph_ap", rest)
    feeds = _counting(ranges_module._OneFeed)
    monkeypatch.setattr(ranges_module, "_OneFeed", feeds)
    capsys.readouterr()
    assert main(command) == 0
    printed = capsys.readouterr()
    assert f"resuming: 2 of {len(groups)} groups already measured" in printed.out
    assert rest.calls == complete.calls - k and feeds.calls == 0  # ranges: all batches were saved
    assert _files(tmp_path) == earlier  # byte for byte the uninterrupted run's outputs; progress files gone


# ---------------------------------------------------------------- evaluation

def test_eval_resumes_per_image_and_matches_an_uninterrupted_run(tiny, tmp_path, monkeypatch, capsys):
    command = ["eval", str(tiny["checkpoint"]), "--data", str(tiny["gt"]), "--batch-size", "1"]
    real_predict = predictor_module.Predictor.predict  # eval runs the checkpoint's EagerPredictor, one call a batch
    assert main(command + ["--out", str(tmp_path / "reference.json")]) == 0
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert reference["num_images"] == 4 and reference["segm"]["AP"] > 0.3 and reference["num_detections"] > 0

    out = tmp_path / "metrics.json"
    out.write_text("earlier run\n")
    k = 2
    monkeypatch.setattr(predictor_module.Predictor, "predict", _interrupt_after(k, real_predict))
    assert main(command + ["--out", str(out)]) == EXIT_INTERRUPTED
    journal = tmp_path / "metrics.json.eval-progress.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + k and out.read_text() == "earlier run\n"
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", journal.name, "reference.json"]

    rest = _counting(real_predict)
    monkeypatch.setattr(predictor_module.Predictor, "predict", rest)
    capsys.readouterr()
    assert main(command + ["--out", str(out)]) == 0
    assert "resuming: 2 of 4 images already evaluated" in capsys.readouterr().err
    assert rest.calls == 4 - k and not journal.exists()
    metrics = json.loads(out.read_text())
    for key in ("bbox", "segm", "num_images", "num_detections"):
        assert metrics[key] == reference[key]


def test_check_on_a_folder_compares_the_readable_images_and_names_the_rest(tiny, onnx_model, tmp_path, capsys):
    folder = _two_good_two_unreadable(tmp_path / "images", tiny["val_images"])
    report = tmp_path / "parity.json"
    capsys.readouterr()
    code = main(["check", str(tiny["checkpoint"]), str(onnx_model), "--data", str(folder), "--report", str(report)])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == EXIT_BAD_INPUT  # the verdict covers only part of the input
    assert f"cannot read image {folder / 'empty.png'}: file is empty (0 bytes)" in err
    assert any(line.startswith(f"cannot read image {folder / 'noise.jpg'}: ") for line in err)
    assert err[-1] == "2 of 4 images could not be read: empty.png, noise.jpg"
    assert "PASS" in captured.out.splitlines()  # the two readable images were compared
    data = json.loads(report.read_text())
    assert data["images"] == 2 and data["passed"] is True
