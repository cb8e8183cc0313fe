"""The HTML report: sections from what exists, escaping, placeholders, and a real headless Chromium
that opens it offline, decodes every image and sorts a table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import write_png
from inversion.generators import save_generator
from inversion.rundir import RunDirectory
from mganprior.cli import main
from reports.browser import chromium_path, open_page
from reports.html import build_report


@pytest.fixture
def attributed_run(tmp_path, tiny_pggan, face_pngs):
    """A tiny run with an attribution, in a folder named like markup."""
    checkpoint = save_generator(tiny_pggan, tmp_path / "tiny.safetensors")
    out = tmp_path / "run<i>&"
    assert main(["invert", "--checkpoint", str(checkpoint), "--images", str(face_pngs),
                 "--out", str(out), "--iterations", "5", "--codes", "3", "--layer", "4",
                 "--perceptual", "none", "--quiet"]) == 0
    labels = tmp_path / "labels"
    labels.mkdir()
    halves = np.tile(np.arange(16, dtype=np.uint8) // 8, (16, 1))  # left wall, right floor
    for name in RunDirectory(out).finished():
        write_png(labels / f"{name}.png", halves)
    assert main(["attribute", str(out), "--labels", str(labels), "--quiet"]) == 0
    return out


def test_report_has_the_sections_its_inputs_allow(attributed_run):
    html = build_report([attributed_run])
    for heading in ("Run configuration", "Inversion gallery", "Summary",
                    "Attribution: codes per class", "Attribution: difference maps"):
        assert f"<h3>{heading}" in html
    assert "run&lt;i&gt;&amp;" in html and "run<i>" not in html  # file names are escaped
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 3 * 3
    assert "alpha_warmup=" in html  # the recipe row names the warm-up the run used
    assert "adam_beta2=0.95" in html  # and the second-moment decay


def test_incomplete_and_damaged_runs_render_what_exists(attributed_run):
    (attributed_run / "results.jsonl").write_text(
        (attributed_run / "results.jsonl").read_text() + "{not json\n")
    folder = next((attributed_run / "images").iterdir())
    (folder / "reconstruction.png").write_bytes(b"\x89PNG broken")
    html = build_report([attributed_run])
    assert "results.jsonl line 4 is damaged and was skipped" in html
    assert "reconstruction.png is unreadable" in html
    shutil.rmtree(attributed_run / "attribution")
    (attributed_run / "results.jsonl").unlink()
    html = build_report([attributed_run])
    assert "results.jsonl is missing" in html and "<h3>Run configuration" in html
    assert "Attribution" not in html


def test_report_command_and_bad_paths(capsys, tmp_path, attributed_run):
    out = tmp_path / "report.html"
    assert main(["report", str(attributed_run), "--out", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), str(attributed_run), "--out",
                 str(tmp_path / "x.html")]) == 0  # says what is missing, shows what exists
    html = (tmp_path / "x.html").read_text()
    assert "holds no config.json (run), study.json (study), attribution.json" in html
    assert "<h3>Inversion gallery" in html
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y.html")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "y.html").exists()


@pytest.mark.skipif(chromium_path() is None, reason="no chromium binary (.ci/run installs it "
                    "with apt-get install chromium)")
def test_report_in_headless_chromium(tmp_path, attributed_run):
    out = tmp_path / "report.html"
    out.write_text(build_report([attributed_run]))
    with open_page(out) as (page, log):
        assert page.evaluate("Array.from(document.images).every("
                             "i => i.complete && i.naturalWidth > 0)")
        assert page.evaluate("document.images.length") >= 9
        headings = page.locator("h3").all_inner_texts()
        assert {"Run configuration", "Inversion gallery", "Summary",
                "Attribution: codes per class"} <= set(headings)

        def psnr_column():
            return [float(v) for v in page.locator("table.gallery tbody tr td:nth-child(5)")
                    .evaluate_all("cells => cells.map(c => c.dataset.value)")]

        original = psnr_column()
        page.locator("table.gallery th", has_text="PSNR").click()
        ascending = psnr_column()
        assert ascending == sorted(original) and len(ascending) == 3
        page.locator("table.gallery th", has_text="PSNR").click()
        assert psnr_column() == sorted(original, reverse=True)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert log.errors == [] and log.blocked == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_page_that_reaches_out_is_caught(tmp_path):
    if chromium_path() is None:
        pytest.skip("no chromium binary")
    page_file = tmp_path / "leaky.html"
    page_file.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    with open_page(page_file) as (page, log):
        page.wait_for_timeout(200)
    assert log.blocked == ["http://example.invalid/x.png"]


def test_study_sections(tmp_path, tiny_pggan, face_pngs):
    from mganprior.studies import StudySpec, run_study

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    spec = StudySpec(kind="layers", generators=[checkpoint], tasks=["inversion"], layers="2,4",
                     codes=[2], iterations=2, perceptual="none")
    run_study(spec, [face_pngs], tmp_path / "study", progress=False, log=lambda _: None)
    html = build_report([tmp_path / "study"])
    for heading in ("Metrics by cell", "Metric by layer", "Reconstructions by layer"):
        assert f"<h3>{heading}" in html
    assert "cells done" in html and "data:text/csv;base64," in html
    assert "<th>alpha warm-up</th><td>4.0</td>" in html  # the adam recipe's, resolved
    assert "<th>Adam beta2</th><td>0.95</td>" in html


def test_classes_by_layer_take_their_colours_from_the_segmenter_vocabulary():
    from matplotlib.colors import to_hex

    from reports.figures import attribution_by_layer

    rows = [{"generator": "g", "task": "inversion", "layer": f"layer{i}", "layer_index": i,
             "codes": 4, "class": name, "codes_assigned": 2, "share": 0.5, "color": color}
            for i in (1, 2) for name, color in (("sky", "#123456"), ("tree", "#abcdef"))]
    figure = attribution_by_layer(rows)
    colours = {to_hex(bar.get_facecolor()) for bar in figure.axes[0].patches}
    assert colours == {"#123456", "#abcdef"}


@pytest.fixture
def edited_run(tmp_path, attributed_run):
    """The attributed run with a SeFa edit of every code."""
    config = RunDirectory(attributed_run).config()
    checkpoint = config["generator"]["checkpoint"]
    assert main(["directions", "sefa", "--checkpoint", checkpoint, "--count", "1", "--out",
                 str(tmp_path / "dirs")]) == 0
    assert main(["edit", str(attributed_run), "--direction", str(tmp_path / "dirs" /
                                                                 "sefa_00.npy"),
                 "--steps", "3", "--quiet"]) == 0
    return attributed_run


def test_edits_come_after_the_analysis_folded_and_as_jpeg(edited_run):
    html = build_report([edited_run])
    assert html.index("<h3>Attribution: difference maps") < html.index('<section id="edits">')
    assert html.count("<details>") == 3  # one per image: animation, strip, changed pixels
    assert "img0: the animation, the strip (4 code sets x 3 steps)" in html
    strips = html.split('alt="strip of ')[1:]
    assert len(strips) == 3 and all(' src="data:image/jpeg;base64,' in s[:60] for s in strips)


def test_a_problem_several_sources_share_is_one_warning_with_relative_paths(tmp_path):
    from reports.html import Source, shared_warnings

    note = f"VGG16 weights not found; put them at {tmp_path}/weights/vgg.pth or {Path.home()}/x"
    sources = [Source("run", "a", "a", problems=[note, "only a"]),
               Source("run", "b", "b", problems=[note])]
    warnings = shared_warnings(sources, tmp_path)
    assert warnings == ["VGG16 weights not found; put them at weights/vgg.pth or ~/x"]
    assert sources[0].problems == ["only a"] and sources[1].problems == []


@pytest.mark.skipif(chromium_path() is None, reason="no chromium binary")
def test_each_section_screenshots_in_the_paper_order(tmp_path, edited_run):
    out = tmp_path / "report.html"
    out.write_text(build_report([edited_run]))
    with open_page(out) as (page, log):
        sections = page.locator("section")
        ids = sections.evaluate_all("nodes => nodes.map(n => n.id)")
        assert ids == ["source-1", "edits"]
        for i in range(sections.count()):
            path = tmp_path / f"section-{i}.png"
            sections.nth(i).screenshot(path=str(path))
            assert path.stat().st_size > 5_000
        assert page.evaluate("Array.from(document.querySelectorAll('details'))"
                             ".every(d => !d.open)")
        page.locator("details summary").first.click()
        assert page.evaluate("document.querySelector('details').open")
    assert log.errors == [] and log.blocked == []
