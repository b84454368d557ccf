"""The check as a library (runtime/check.py) and its HTML report (runtime/report_html.py), rendered in
headless Chromium.

The check compares a seeded ResNet-18-FPN checkpoint with a copy whose RoI heads are perturbed, so some
detections move, change score or lose their partner: the report has mismatches to show and the verdict
is FAIL. The perturbed copy lives in a folder named with HTML's special characters.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_deploy.model.checkpoint import save_checkpoint
from maskrcnn_deploy.model.config import resnet18_fpn
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime import parity, report_html
from maskrcnn_deploy.runtime.check import rank_matches, run_check
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.report_html import FAIL_COLOR, PASS_COLOR, write_check_html, write_summary_html

from seeded_models import seeded_model

NUM_CLASSES = 4
WEIRD_DIR = 'we<ird> & "dir"'
WINDOW = (1280, 2400)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    val = make_synthetic_dataset(root / "data", num_train=1, num_val=4, seed=3, image_size=(150, 190))["val"]
    # narrow heads and 20 detections: the seeded model's detections all pass the score threshold, and
    # full-width heads on 100 of them take seconds per image on a 2-core CPU
    cfg = resnet18_fpn(NUM_CLASSES, min_size=128, max_size=160, box_score_thresh=0.05, detections_per_img=20,
                       rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=200, fpn_channels=64,
                       mask_head_channels=64, box_fc_dim=256)
    model = seeded_model(cfg)
    names = ["__background__", "square", "disc", "star"]
    reference = save_checkpoint(root / "reference.pt", model, cfg, class_names=names)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.roi_heads.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.3 * p.std())
    perturbed = save_checkpoint(root / WEIRD_DIR / "perturbed.pt", model, cfg, class_names=names)
    run = run_check(reference, perturbed, val, parity.tolerances_from("fp32"))
    return {"root": root, "val": val, "reference": reference, "perturbed": perturbed, "run": run}


def test_run_check_compares_both_sides_on_the_same_images(setup):
    run = setup["run"]
    report = run.report
    assert [p.name for p in run.image_paths] == ["000000.png", "000001.png", "000002.png", "000003.png"]
    for side, path in ((run.reference, setup["reference"]), (run.artifact, setup["perturbed"])):
        assert side.path == str(path) and side.backend == "pytorch" and side.class_names[1] == "square"
        assert len(side.detections) == len(side.latencies_s) == 4 and min(side.latencies_s) > 0
        assert set(side.ap) == {"bbox", "segm"}
    assert report.ap_ref == run.reference.ap and report.ap_test == run.artifact.ap
    # the perturbation is visible: detections without partner and pairs that moved, so fp32 fails
    assert not report.passed and report.matched < report.ref_detections and report.matched > 0
    assert report.box_error_px.max() > 1.0
    # a reference run is reused as is (not run again) and must cover the same images
    again = run_check("not-loaded.pt", setup["perturbed"], setup["val"], parity.tolerances_from("fp32"),
                      reference_run=run.reference)
    assert again.reference is run.reference and again.report.matched == report.matched
    with pytest.raises(ValueError, match="the reference run has 4 images but .* gives 2"):
        run_check("x.pt", setup["perturbed"], setup["val"], parity.tolerances_from("fp32"), max_images=2,
                  reference_run=run.reference)


def test_rank_matches_covers_every_detection_worst_first(setup):
    run = setup["run"]
    entries = rank_matches(run)
    report = run.report
    assert sum(e.matched for e in entries) == report.matched
    assert sum(e.artifact is None for e in entries) == report.ref_detections - report.matched
    assert sum(e.reference is None for e in entries) == report.test_detections - report.matched
    severities = [e.severity for e in entries]
    assert severities == sorted(severities, reverse=True) and severities[0] > 0
    for e in entries:
        if e.matched:
            score = max(run.reference.detections[e.image]["scores"][e.reference],
                        run.artifact.detections[e.image]["scores"][e.artifact])
            assert e.severity == pytest.approx(score * (1 - min(e.box_iou, e.mask_iou)))
        else:
            side, index = (run.reference, e.reference) if e.reference is not None else (run.artifact, e.artifact)
            assert e.severity == pytest.approx(float(side.detections[e.image]["scores"][index]))


class _Links(html.parser.HTMLParser):
    """src/href attributes and the rows of the table with class "worst"."""

    def __init__(self):
        super().__init__()
        self.links, self.worst_rows, self.figures, self._in_worst, self._body = [], 0, 0, False, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        self._in_worst |= tag == "table" and attrs.get("class") == "worst"
        self._body |= self._in_worst and tag == "tbody"
        self.worst_rows += self._body and tag == "tr"
        self.figures += tag == "figure"

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_worst = self._body = False


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_check_html_links_its_assets_and_escapes_text(setup, tmp_path):
    run = setup["run"]
    page = write_check_html(run, tmp_path / "check <1>.html", title="<script>alert(1)</script>", worst_images=3,
                            worst_detections=7)
    text = page.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.links and all(not urlparse(link).scheme for link in parsed.links)  # nothing from the network
    for link in parsed.links:
        assert (page.parent / unquote(link)).is_file(), link
    assert any(link.endswith("histograms.png") for link in parsed.links)
    entries = rank_matches(run)
    assert parsed.worst_rows == min(7, len(entries)) == 7
    assert parsed.figures == min(3, len({e.image for e in entries})) == 3
    assert len(list((tmp_path / "check <1>_files").glob("overlay_*.png"))) == 2 * 3
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert WEIRD_DIR not in text and "we&lt;ird&gt; &amp; &quot;dir&quot;" in text
    assert "FAIL" in text and "BROKEN" in text and text.count("no partner") >= 1
    for failure in run.report.failures:
        assert failure.replace("<", "&lt;").replace(">", "&gt;") in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check <1>.html", "check <1>_files"]  # no temporaries


def test_check_html_is_written_whole_or_not_at_all(setup, tmp_path, monkeypatch):
    run = setup["run"]
    page = write_check_html(run, tmp_path / "r.html", worst_images=1)
    before = {p.name: p.read_bytes() for p in [page, *(tmp_path / "r_files").iterdir()]}
    calls = []

    def failing_save(image, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return Path(path)
    monkeypatch.setattr(report_html, "save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_check_html(run, tmp_path / "r.html", worst_images=4)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r_files"]  # no temporaries left
    after = {p.name: p.read_bytes() for p in [page, *(tmp_path / "r_files").iterdir()]}
    assert after == before  # the earlier report is intact


def test_summary_html_links_and_escapes(tmp_path):
    page = write_summary_html(tmp_path / "demo.html", "demo <table>", ["backend", "parity", "report"],
                              [["onnxruntime <fp32>", "PASS", ("check", "checks/a b#<1>.html")],
                               ["tensorrt", "FAIL", "-"]],
                              notes=["a & b"], links=[("onnxruntime fp32", "checks/x.html")])
    text = page.read_text(encoding="utf-8")
    assert "demo &lt;table&gt;" in text and "onnxruntime &lt;fp32&gt;" in text and "a &amp; b" in text
    assert 'href="checks/a%20b%23%3C1%3E.html"' in text and 'href="checks/x.html"' in text
    assert '<td class="held">PASS</td>' in text and '<td class="broken">FAIL</td>' in text


def test_check_cli_writes_html_beside_the_json(setup, tmp_path, capsys):
    report = tmp_path / "parity.json"
    code = main(["check", str(setup["reference"]), str(setup["perturbed"]), "--data", str(setup["val"]),
                 "--max-images", "2", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out
    assert f"html report: {tmp_path / 'parity.html'}" in out
    assert json.loads(report.read_text())["images"] == 2
    assert (tmp_path / "parity.html").is_file() and (tmp_path / "parity_files" / "histograms.png").is_file()


# ----------------------------------------------------------------------------------------- the browser
def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed (`make test` installs it with apt-get where it can: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def test_missing_chromium_skips_locally_and_fails_on_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        _chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed"):
        _chromium()


def screenshot(page: Path, png: Path, profile: Path) -> np.ndarray:
    """RGB [H,W,3] uint8 screenshot of `page` in headless Chromium at WINDOW size."""
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={png}", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


def _codes(rgb: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 -> [H,W] int32, one number per colour."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def locate(screen: np.ndarray, patch: np.ndarray) -> tuple[int, int] | None:
    """(top, left) where `patch` appears pixel for pixel in `screen` (an unscaled PNG on an sRGB page), or None."""
    h, w = patch.shape[:2]
    screen_codes, patch_codes = _codes(screen), _codes(patch).reshape(-1)
    # anchor on the patch colour that is rarest on the screen: few candidate positions to verify
    colors, counts = np.unique(screen_codes, return_counts=True)
    wanted, first = np.unique(patch_codes, return_index=True)
    found = np.isin(wanted, colors)
    if not found.all():
        return None
    k = int(np.argmin(counts[np.searchsorted(colors, wanted)]))
    y, x = divmod(int(first[k]), w)
    for sy, sx in np.argwhere(screen_codes == wanted[k]):
        top, left = sy - y, sx - x
        if 0 <= top and 0 <= left and top + h <= screen.shape[0] and left + w <= screen.shape[1]:
            if np.array_equal(screen[top:top + h, left:left + w], patch):
                return int(top), int(left)
    return None


def banner_rows(screen: np.ndarray, color: tuple[int, int, int], width: int = 150) -> int:
    """Rows of `screen` holding a run of at least `width` pixels of exactly `color` (text never does)."""
    hit = np.all(screen == color, axis=-1)
    runs = np.concatenate([np.zeros((hit.shape[0], 1), int), np.cumsum(hit, axis=1)], axis=1)
    return int(((runs[:, width:] - runs[:, :-width]) == width).any(axis=1).sum())


def test_report_renders_in_headless_chromium(setup, tmp_path):
    _chromium()
    page = write_check_html(setup["run"], tmp_path / "report.html", worst_images=2)
    screen = screenshot(page, tmp_path / "report.png", tmp_path / "profile")
    assert screen.shape == (WINDOW[1], WINDOW[0], 3)
    white = np.all(screen == 255, axis=-1)
    assert 0.05 < 1 - white.mean() < 0.9 and len(np.unique(screen.reshape(-1, 3), axis=0)) > 1000
    # the FAIL banner near the top: a solid block (about 210 x 90 px, white letters inside), not just red text
    top = screen[:300]
    assert banner_rows(top, FAIL_COLOR) >= 30 and banner_rows(top, PASS_COLOR) == 0
    # every image of the page is drawn where the layout puts it, unscaled, and in page order
    positions = []
    for name in ["histograms.png"] + [f"overlay_{k:02d}_{role}.png" for k in (1, 2) for role in ("reference",
                                                                                                  "artifact")]:
        with Image.open(tmp_path / "report_files" / name) as image:
            patch = np.asarray(image.convert("RGB"))
        where = locate(screen, patch)
        assert where is not None, f"{name} is not on the screenshot"
        positions.append(where)
    (hist_top, _), (ref1_top, ref1_left), (art1_top, art1_left), (ref2_top, _), _ = positions
    assert hist_top > 300 and ref1_top > hist_top and ref2_top > ref1_top
    assert art1_top == ref1_top and art1_left > ref1_left  # side by side
