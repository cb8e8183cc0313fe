"""The demo's pipeline end to end at tiny settings: every part runs and lands in one report."""

from __future__ import annotations

import pytest

from mganprior.demo import TINY, run_demo

pytestmark = pytest.mark.slow


def test_demo_pipeline_writes_a_report_with_every_part(tmp_path, capsys):
    report = run_demo(tmp_path / "demo", device="cpu", progress=False, scale=TINY)
    printed = capsys.readouterr().out
    assert f"report: {report.resolve()}" in printed and "full-quality" in printed
    html = report.read_text()
    for source in ("faces-multi-code", "faces-single-code", "bedrooms", "layers",
                   "cross-domain"):
        assert f": {source}</h2>" in html
    for heading in ("Inversion gallery", "Attribution: codes per class", "Metrics by cell",
                    "Attribution by layer", "Cross-domain reconstructions"):
        assert f"<h3>{heading}" in html
    # rerunning resumes: nothing is recomputed and the report is rewritten
    before = (tmp_path / "demo" / "bedrooms" / "results.jsonl").read_text()
    run_demo(tmp_path / "demo", device="cpu", progress=False, scale=TINY)
    assert (tmp_path / "demo" / "bedrooms" / "results.jsonl").read_text() == before
