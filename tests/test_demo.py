"""The demo's pipeline end to end at tiny settings: every part runs and lands in one report, which
a headless Chromium opens offline."""

from __future__ import annotations

import pytest

from mganprior.demo import TINY, run_demo
from reports.browser import chromium_path, open_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(out, device="cpu", progress=False, scale=TINY)
    return out


def test_demo_pipeline_writes_a_report_with_every_part(demo_dir, capsys):
    before = (demo_dir / "bedrooms" / "results.jsonl").read_text()
    report = run_demo(demo_dir, device="cpu", progress=False, scale=TINY)  # resumes
    assert (demo_dir / "bedrooms" / "results.jsonl").read_text() == before
    printed = capsys.readouterr().out
    assert f"report: {report.resolve()}" in printed and "full-quality" in printed
    html = report.read_text()
    for source in ("faces-multi-code", "faces-single-code", "faces-tuned", "bedrooms",
                   "bedrooms-stylegan2", "layers", "cross-domain"):
        assert f": {source}</h2>" in html
    for heading in ("Inversion gallery", "Generator tuning", "Attribution: codes per class",
                    "Metrics by cell",
                    "Attribution by layer", "Cross-domain reconstructions", "Edits: sefa_00",
                    "Edits: class_bed"):
        assert f"<h3>{heading}" in html
    assert "data:image/gif;base64" in html


@pytest.mark.skipif(chromium_path() is None, reason="no chromium binary (.ci/run installs it "
                    "with apt-get install chromium)")
def test_demo_report_in_headless_chromium(demo_dir, tmp_path):
    with open_page(demo_dir / "report.html") as (page, log):
        assert page.evaluate("Array.from(document.images).every("
                             "i => i.complete && i.naturalWidth > 0)")
        headings = set(page.locator("h3").all_inner_texts())
        assert {"Run configuration", "Inversion gallery", "Attribution: codes per class",
                "Metrics by cell", "Metric by layer", "Reconstructions by layer",
                "Cross-domain reconstructions", "Attribution by layer", "Edits: sefa_00",
                "Edits: class_bed"} <= headings
        table = page.locator("table.sortable-table").filter(has_text="metric").first
        before = table.locator("tbody tr td:nth-child(8)").all_inner_texts()
        table.locator("th", has_text="mean").click()
        after = table.locator("tbody tr td:nth-child(8)").all_inner_texts()
        assert [float(v) for v in after] == sorted(float(v) for v in before)
        assert len(after) > 10
        page.screenshot(path=str(tmp_path / "demo-report.png"), full_page=True)
    assert log.errors == [] and log.blocked == []


def test_without_the_face_package_the_demo_skips_its_face_steps_and_says_how_to_add_them(
        tmp_path, monkeypatch, capsys):
    from importlib import resources

    from mganprior import zoo

    real = resources.files

    def without_faces(package):
        if package == "gan_face_generate":
            raise ModuleNotFoundError("No module named 'gan_face_generate'")
        return real(package)

    monkeypatch.setattr(zoo.resources, "files", without_faces)
    report = run_demo(tmp_path / "demo", device="cpu", progress=False, scale=TINY)
    output = capsys.readouterr()
    skipped = [line for line in (output.out + output.err).splitlines()
               if line.startswith("skipped:")]
    assert len(skipped) == 1 and "pip install 'mganprior[digiface]'" in skipped[0]
    assert not (tmp_path / "demo" / "faces-multi-code").exists()
    html = report.read_text()
    for source in ("bedrooms", "bedrooms-stylegan2", "layers", "cross-domain"):
        assert f": {source}</h2>" in html
    assert "faces-multi-code" not in html and "digiface" not in html
    assert "<h3>Edits: class_bed" in html
