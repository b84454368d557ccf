"""HTML pages of parity results: one page per check, and a summary table (the demo's).

    write_check_html(run, "out/check.html")    ->  out/check.html + out/check_files/*.png
    write_divergence_html(report, "out/divergence.html")   (runtime/diverge/; also a section of a check page)
    write_summary_html("out/demo.html", "demo", columns, rows, notes, links)

Plain HTML with inline CSS: no scripts, no network resources; opens from disk in any browser. A page
and its asset folder are written under temporary names and renamed into place, so an error leaves no
half-written report. Every text that goes into the page is escaped.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw

from maskrcnn_deploy.common.files import write_text
from maskrcnn_deploy.model.data.images import load_rgb
from maskrcnn_deploy.runtime import parity
from maskrcnn_deploy.runtime.check import CheckRun, DetectionMatch, rank_matches
from maskrcnn_deploy.runtime.diverge import DivergenceReport, save_divergence_plot
from maskrcnn_deploy.runtime.visualize import draw_detections, save_png

__all__ = ["write_check_html", "write_summary_html", "write_divergence_html", "PASS_COLOR", "FAIL_COLOR", "PANEL_MAX_PX"]

PASS_COLOR = (26, 127, 55)   # the verdict banner's background, RGB
FAIL_COLOR = (207, 34, 46)
PANEL_MAX_PX = 600           # overlays wider than this are shown scaled down (click for full size)
OVERLAY_TARGET_PX = 512      # small images are drawn enlarged x(this // long side) so labels stay readable

CSS = """
body { font: 14px/1.4 -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1f2328; background: #fff;
       margin: 24px; max-width: 1240px; }
h1 { font-size: 22px; margin: 0 0 12px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.verdict { display: inline-block; color: #fff; font-size: 44px; font-weight: 700; padding: 8px 40px;
           border-radius: 6px; letter-spacing: 2px; }
.pass { background: rgb%s; } .fail { background: rgb%s; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.held { color: rgb%s; font-weight: 600; } .broken { color: rgb%s; font-weight: 600; }
.none { color: #8c959f; font-style: italic; } .path { font-family: monospace; word-break: break-all; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; }
.cols { display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }
figure { margin: 0; padding: 8px; border: 1px solid #d0d7de; border-radius: 6px; }
figure .pair { display: flex; gap: 8px; } figure .pair div { font-weight: 600; }
figcaption { width: 0; min-width: 100%%; margin-top: 6px; }  /* wraps at the images' width */
img { display: block; }
.note { color: #57606a; } .failures { color: rgb%s; font-weight: 600; }
""" % (PASS_COLOR, FAIL_COLOR, PASS_COLOR, FAIL_COLOR, FAIL_COLOR)


def _e(value) -> str:
    """Text escaped for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def _url(relative: str) -> str:
    """A relative link with unusual characters (spaces, <, #...) percent-encoded, ready for an attribute."""
    return _e(quote(relative, safe="/"))


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cell HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>\n" for row in rows)
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>"


def _td(text, num: bool = False, cls: str = "", colspan: int = 1) -> str:
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    attrs = (f" class=\"{classes}\"" if classes else "") + (f" colspan=\"{colspan}\"" if colspan > 1 else "")
    return f"<td{attrs}>{_e(text)}</td>"


# ------------------------------------------------------------------------------------ summary of a check
def _tolerance_rows(report: parity.ParityReport) -> list[list[str]]:
    """(check, limit, measured, held) per tolerance; the per-pair ones are parity.pair_checks, as check_parity's."""
    t = report.tolerances
    rows = []

    def row(name, limit, value, held, unit=""):
        measured = "n/a" if value is None else f"{value:.4f}{unit}"
        verdict = _td("n/a", cls="none") if held is None else _td("held" if held else "BROKEN",
                                                                  cls="held" if held else "broken")
        rows.append([_td(name), _td(limit, num=True), _td(measured, num=True), verdict])

    for side, frac in (("reference", report.match_fraction_ref), ("artifact", report.match_fraction_test)):
        row(f"matched fraction of {side} detections", f">= {t.min_match_fraction:.4f}", frac,
            None if frac is None else frac >= t.min_match_fraction)
    checks = parity.pair_checks(t, {key: getattr(report, key)
                                    for key in ("box_iou", "mask_iou", "box_error_px", "score_delta")})
    for c in checks:
        row(f"{c.label} ({c.stat} of matched pairs)", f"{'>=' if c.is_min else '<='} {c.limit:.4f}{c.unit}",
            c.value, c.held, c.unit)
    for kind, delta in sorted((report.ap_delta or {}).items()):
        d = delta.get("AP")
        row(f"|{kind} AP delta|", f"<= {t.max_ap_delta:.4f}", None if d is None else abs(d),
            None if d is None else abs(d) <= t.max_ap_delta)
    return rows


def _summary_section(run: CheckRun) -> list[str]:
    """Failures, models, tolerances vs measured values, and per side: detections and AP."""
    r = run.report
    out = []
    if r.failures:
        out.append("<ul class=\"failures\">" + "".join(f"<li>{_e(f)}</li>" for f in r.failures) + "</ul>")
    models = [[_td(role), _td(side.path, cls="path"), _td(side.backend), _td(len(side.latencies_s), True),
               _td(f"{1000 * float(np.median(side.latencies_s)):.1f} ms" if side.latencies_s else "-", True)]
              for role, side in (("reference", run.reference), ("artifact", run.artifact))]
    out += ["<h2>Models</h2>", _table(["role", "path", "backend", "images", "median latency"], models)]
    left = [f"<h2>Tolerances ({_e(r.tolerances.name)})</h2>",
            _table(["check", "limit", "measured", "result"], _tolerance_rows(r))]
    kinds = sorted(r.ap_delta or {}) if r.ap_ref is not None else []
    rows = []
    for role, count, ap in (("reference", r.ref_detections, r.ap_ref), ("artifact", r.test_detections, r.ap_test)):
        rows.append([_td(role), _td(count, True), _td(count - r.matched, True)] +
                    [_td(f"{100 * ap[k]['AP']:.2f}", True) for k in kinds])
    if kinds:
        deltas = [r.ap_delta[k].get("AP") for k in kinds]
        rows.append([_td("delta"), _td(""), _td("")] +
                    [_td("-" if d is None else f"{100 * d:+.2f}", True) for d in deltas])
    right = ["<h2>Detections and COCO AP</h2>",
             _table(["side", "detections", "without partner"] + [f"{k} AP x100" for k in kinds], rows),
             f"<p class=\"note\">{_e(r.matched)} matched pairs (same label, box IoU >= "
             f"{r.tolerances.match_iou:g}).</p>"]
    out.append(f"<div class=\"cols\"><div>{''.join(left)}</div><div>{''.join(right)}</div></div>")
    if r.raw:
        out.append(f"<p class=\"note\">Raw outputs of matched pairs, max abs error: boxes "
                   f"{_fmt(r.raw['max_box_error'])} (model input px), scores {_fmt(r.raw['max_score_error'])}, "
                   f"28x28 mask probabilities "
                   f"{_fmt(r.raw['max_mask_prob_error'])}; num_detections differ in "
                   f"{_e(r.raw['num_detections_mismatch'])} of {_e(r.raw['images'])} images.</p>")
    return out


# ------------------------------------------------------------------------------------ worst matches
def _name(class_names, label: int) -> str:
    return class_names[label] if class_names and 0 <= label < len(class_names) else f"class{label}"


def _det_cells(det: dict, index: int | None, class_names) -> str:
    if index is None:
        return _td("no partner", cls="none", colspan=3)
    box = ", ".join(f"{v:.1f}" for v in np.asarray(det["boxes"][index], np.float64))
    label = int(det["labels"][index])
    return _td(f"{_name(class_names, label)} ({label})") + _td(f"{float(det['scores'][index]):.3f}", True) + \
        _td(f"[{box}]", True)


def _worst_table(run: CheckRun, entries: list[DetectionMatch], count: int) -> list[str]:
    names = run.reference.class_names or run.artifact.class_names
    rows = []
    for e in entries[:count]:
        ref, art = run.reference.detections[e.image], run.artifact.detections[e.image]
        rows.append([_td(run.image_paths[e.image].name), _det_cells(ref, e.reference, names),
                     _det_cells(art, e.artifact, names), _td(_fmt(e.box_iou), True), _td(_fmt(e.mask_iou), True),
                     _td(_fmt(e.box_error_px, ".2f"), True), _td(f"{e.severity:.3f}", True)])
    header = ["image", "reference label", "score", "box (x0, y0, x1, y1)", "artifact label", "score",
              "box (x0, y0, x1, y1)", "box IoU", "mask IoU", "box error px", "severity"]
    return [f"<h2>Worst {len(rows)} of {len(entries)} detections</h2>",
            "<p class=\"note\">Worst first, by severity: for a detection without partner on the other side, its "
            "score; for a matched pair, 1 - its lower IoU (box or mask), times its higher score. Boxes in original "
            "image pixels.</p>",
            _table(header, rows, cls="worst")]


def _reason(image_entries: list[DetectionMatch], run: CheckRun) -> str:
    """Why an image is shown: its worst entry, and its counts."""
    worst, names = image_entries[0], run.reference.class_names or run.artifact.class_names
    pairs = [e for e in image_entries if e.matched]
    counts = (f"reference {sum(e.reference is not None for e in image_entries)}, artifact "
              f"{sum(e.artifact is not None for e in image_entries)} detections, {len(pairs)} matched")
    if worst.matched:
        det = run.reference.detections[worst.image]
        why = (f"its worst pair ({_name(names, int(det['labels'][worst.reference]))}, reference score "
               f"{float(det['scores'][worst.reference]):.2f}) has box IoU "
               f"{worst.box_iou:.4f}, mask IoU {worst.mask_iou:.4f}, box error {worst.box_error_px:.2f} px")
    else:
        side, index = ("reference", worst.reference) if worst.reference is not None else ("artifact", worst.artifact)
        det = getattr(run, side).detections[worst.image]
        why = (f"a {side} detection ({_name(names, int(det['labels'][index]))}, score "
               f"{float(det['scores'][index]):.3f}) has no partner")
    return f"{why}; {counts}."


def _enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    """[H,W,...] -> [H*factor,W*factor,...], each pixel repeated (no blur: mask edges stay exact)."""
    return array.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else array


def _pad(det: dict, order: list[int | None], size: tuple[int, int], factor: int) -> dict:
    """det's detections in `order`, enlarged x factor; None slots are invisible (score -1), so that
    draw_detections gives slot k the same colour on both sides."""
    boxes = np.zeros((len(order), 4), np.float32)
    scores, labels = np.full(len(order), -1.0, np.float32), np.zeros(len(order), np.int64)
    masks = np.zeros((len(order), size[0] * factor, size[1] * factor), bool)
    for k, i in enumerate(order):
        if i is not None:
            boxes[k] = np.asarray(det["boxes"][i]) * factor
            scores[k], labels[k] = det["scores"][i], det["labels"][i]
            masks[k] = _enlarge(np.asarray(det["masks"][i]), factor)
    return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks}


def _overlay_pair(run: CheckRun, image_entries: list[DetectionMatch]) -> tuple[Image.Image, Image.Image]:
    """Reference and artifact drawings of one image: a matched pair has one colour on both sides; a detection
    without partner is framed black and white."""
    i = image_entries[0].image
    image = load_rgb(run.image_paths[i])
    size = image.shape[:2]
    factor = max(1, OVERLAY_TARGET_PX // max(size))
    image = _enlarge(image, factor)
    pairs = [e for e in image_entries if e.matched]
    lone_ref = [e.reference for e in image_entries if e.artifact is None]
    lone_art = [e.artifact for e in image_entries if e.reference is None]
    ref_order = [e.reference for e in pairs] + lone_ref + [None] * len(lone_art)
    art_order = [e.artifact for e in pairs] + [None] * len(lone_ref) + lone_art
    names = run.reference.class_names or run.artifact.class_names or []
    drawings = []
    for side, order, lone in ((run.reference, ref_order, lone_ref), (run.artifact, art_order, lone_art)):
        det = side.detections[i]
        drawing = draw_detections(image, _pad(det, order, size, factor), names, score_thresh=0.0)
        draw = ImageDraw.Draw(drawing)
        for index in lone:
            x0, y0, x1, y1 = (float(v) * factor for v in det["boxes"][index])
            draw.rectangle([x0 - 4, y0 - 4, x1 + 4, y1 + 4], outline=(0, 0, 0), width=2)
            draw.rectangle([x0 - 6, y0 - 6, x1 + 6, y1 + 6], outline=(255, 255, 255), width=2)
        drawings.append(drawing)
    return drawings[0], drawings[1]


def _img(relative: str, width: int, height: int, alt: str, max_width: int = PANEL_MAX_PX) -> str:
    """An image of width x height pixels, shown at most max_width wide, linking to itself at full size."""
    scale = min(1.0, max_width / width)
    w, h = round(width * scale), round(height * scale)
    return (f"<a href=\"{_url(relative)}\"><img src=\"{_url(relative)}\" width=\"{w}\" height=\"{h}\" "
            f"alt=\"{_e(alt)}\"></a>")


def _overlay_section(run: CheckRun, entries: list[DetectionMatch], count: int, assets: Path, folder: str
                     ) -> list[str]:
    """Reference | artifact overlays of the `count` images whose worst entry is worst, saved into assets."""
    by_image: dict[int, list[DetectionMatch]] = {}
    for e in entries:  # worst first, so each image's list starts with its worst entry
        by_image.setdefault(e.image, []).append(e)
    figures = []
    for rank, (i, image_entries) in enumerate(list(by_image.items())[:count], start=1):
        name = run.image_paths[i].name
        panels = []
        for role, drawing in zip(("reference", "artifact"), _overlay_pair(run, image_entries)):
            file = f"overlay_{rank:02d}_{role}.png"
            save_png(drawing, assets / file)
            image = _img(f"{folder}/{file}", drawing.width, drawing.height, f"{role}: {name}")
            panels.append(f"<div>{role}<br>{image}</div>")
        figures.append(f"<figure><div class=\"pair\">{''.join(panels)}</div><figcaption><b>#{rank} "
                       f"{_e(name)}</b>: shown because {_e(_reason(image_entries, run))}</figcaption></figure>")
    shown = f"<div class=\"figures\">{''.join(figures)}</div>" if figures else "<p class=\"none\">no detections</p>"
    return [f"<h2>Images with the worst matches ({len(figures)})</h2>",
            "<p class=\"note\">Same colour on both sides: a matched pair. Black-and-white frame: a detection with "
            "no partner on the other side. Every detection the check compared is drawn.</p>", shown]


# ------------------------------------------------------------------------------------ divergence
def _divergence_rows(report: DivergenceReport, rows) -> list[list[str]]:
    first = report.first_divergent
    cells = []
    for r in rows:
        e, marker = r.error, "held" if r is not first else "broken"
        cells.append([_td(r.pair.index, True), _td(r.pair.name, cls=f"path {marker}" if r is first else "path"),
                      _td(r.pair.op), _td(r.pair.depth, True), _td(_fmt(e.cosine, ".6f"), True),
                      _td(_fmt(e.rel_l2, ".3g"), True), _td(_fmt(r.input_rel_l2, ".3g"), True),
                      _td(_fmt(e.p99_abs, ".3g"), True), _td(e.dtype),
                      _td(" > ".join(r.pair.seen_through) or "-")])
    return cells


def divergence_section(report: DivergenceReport, assets: Path, folder: str) -> list[str]:
    """"Where the error enters": the first divergent tensor, the plot (saved into assets), the largest jumps."""
    first = report.first_divergent
    if first is None:
        verdict = f"No tensor's relative L2 error exceeds {report.threshold:g}."
    else:
        verdict = (f"First tensor past relative L2 {report.threshold:g}: {first.pair.name} ({first.pair.op} "
                   f"{first.pair.node}, depth {first.pair.depth}), relative L2 {_fmt(first.error.rel_l2, '.3g')}.")
    save_divergence_plot(report, assets / "divergence.png")
    with Image.open(assets / "divergence.png") as plot:
        image = _img(f"{folder}/divergence.png", plot.width, plot.height, "error along graph depth", plot.width)
    header = ["#", "tensor", "op", "depth", "cosine", "rel L2", "inputs' rel L2", "p99 |error|", "artifact dtype",
              "seen through"]
    jumps = report.largest_jumps()
    return ["<h2>Where the error enters (layer by layer)</h2>",
            f"<p class=\"note\">{_e(report.artifact)} against {_e(report.reference)}: {len(report.rows)} tensors "
            f"matched by name, on {len(report.images)} image(s); each metric is the worst over the images.</p>",
            f"<p class=\"{'failures' if first else 'note'}\">{_e(verdict)}</p>", image,
            f"<h2>Largest error added by one node ({len(jumps)})</h2>",
            "<p class=\"note\">rel L2 minus the largest rel L2 of the node's inputs: the error the node adds.</p>",
            _table(header, _divergence_rows(report, ([first] if first else []) + [r for r in jumps if r is not first]))]


def write_divergence_html(report: DivergenceReport, path_html: str | Path, title: str | None = None) -> Path:
    """A page with the divergence section alone (assets in `<stem>_files/` beside it)."""
    title = title or f"divergence: {Path(report.artifact).name} vs {Path(report.reference).name}"
    return _write_page(path_html, lambda assets, folder: _page(title, [f"<h1>{_e(title)}</h1>",
                                                                      *divergence_section(report, assets, folder)]))


# ------------------------------------------------------------------------------------ writing
def _write_page(path_html: str | Path, render) -> Path:
    """render(assets folder, the name pages link it by) -> page text. Nothing changes unless rendering
    succeeds; then the folder `<stem>_files/` and the page are each renamed into place."""
    path = Path(path_html)
    path.parent.mkdir(parents=True, exist_ok=True)
    assets = path.with_name(f"{path.stem}_files")
    tmp_assets = Path(tempfile.mkdtemp(prefix=f".{assets.name}.", suffix=".tmp", dir=path.parent))
    try:
        text = render(tmp_assets, assets.name)
        umask = os.umask(0)
        os.umask(umask)
        tmp_assets.chmod(0o777 & ~umask)  # mkdtemp's folder is private (0700); a report folder is not
        if assets.exists():  # a folder cannot be renamed onto a non-empty one: move the old one aside first
            old = tmp_assets.with_suffix(".old")
            os.replace(assets, old)
            shutil.rmtree(old)
        os.replace(tmp_assets, assets)
    except BaseException:
        shutil.rmtree(tmp_assets, ignore_errors=True)
        raise
    return write_text(path, text)


def write_check_html(run: CheckRun, path_html: str | Path, title: str | None = None, worst_images: int = 6,
                     worst_detections: int = 25, divergence: DivergenceReport | None = None) -> Path:
    """One page for a check: verdict, models, tolerances vs measured, AP, failures, error histograms,
    overlays of the `worst_images` images with the worst matches, and the `worst_detections` worst
    detections; with `divergence` (check --diverge), where the error enters. Assets go to `<stem>_files/`
    beside the page. Returns the page's path."""
    r = run.report
    title = title or f"parity: {Path(run.artifact.path).name} vs {Path(run.reference.path).name}"

    def render(assets: Path, folder: str) -> str:
        entries = rank_matches(run)
        verdict = "PASS" if r.passed else "FAIL"
        body = [f"<h1>{_e(title)}</h1>",
                f"<div class=\"verdict {verdict.lower()}\">{verdict}</div>",
                f"<p>{_e(r.num_images)} images, tolerances <b>{_e(r.tolerances.name)}</b>, "
                f"{len(r.failures)} failure(s).</p>"]
        body += _summary_section(run)
        parity.save_error_histograms(r, assets / "histograms.png")
        with Image.open(assets / "histograms.png") as hist:
            body += ["<h2>Error histograms (matched pairs)</h2>",
                     _img(f"{folder}/histograms.png", hist.width, hist.height, "error histograms", hist.width)]
        body += _overlay_section(run, entries, worst_images, assets, folder)
        body += _worst_table(run, entries, worst_detections)
        if divergence is not None:
            body += divergence_section(divergence, assets, folder)
        return _page(title, body)

    return _write_page(path_html, render)


def write_summary_html(path_html: str | Path, title: str, columns: Sequence[str], rows: Sequence[Sequence],
                       notes: Sequence[str] = (), links: Sequence[tuple[str, str]] = ()) -> Path:
    """A table page. A cell is a string, or (text, href) for a link (href relative to the page); cells
    reading PASS/FAIL are coloured. notes: paragraphs below the table; links: (text, href) listed below."""
    def cell(value) -> str:
        if isinstance(value, tuple):
            text, href = value
            return f"<td><a href=\"{_url(href)}\">{_e(text)}</a></td>"
        cls = {"PASS": "held", "FAIL": "broken"}.get(str(value), "")
        return _td(value, cls=cls)

    body = [f"<h1>{_e(title)}</h1>", _table(columns, [[cell(v) for v in row] for row in rows])]
    body += [f"<p class=\"note\">{_e(n)}</p>" for n in notes]
    if links:
        body.append("<h2>Reports</h2><ul>" + "".join(f"<li><a href=\"{_url(href)}\">{_e(text)}</a></li>"
                                                     for text, href in links) + "</ul>")
    return write_text(path_html, _page(title, body))
