"""Figures for papers: every builder writes PNG, PDF and SVG; the vector files keep their text as
text, at the print width, none of it under 7 pt; edit figures label their rows, columns and effect;
``mganprior figures`` redraws stored results in other formats without recomputing them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from analysis.attribution import attribute
from analysis.directions import Direction
from analysis.editing import EFFECT_NOISE, EditSettings, edit
from helpers import (
    REGION_VOCABULARY,
    BrightnessToy,
    RegionGenerator,
    ThresholdSegmenter,
    inversion_of,
    region_labels,
    specialised_alphas,
    toy_inversion,
)
from mganprior.core.errors import InputError
from reports import figures
from reports.output import COLUMN_WIDTHS, FigureOutput

ALL_FORMATS = FigureOutput(("png", "pdf", "svg"), "double")


def svg_font_sizes(path) -> list[float]:
    return [float(size) for size in re.findall(r"font-size: ([\d.]+)px", path.read_text())]


def svg_width_inches(path) -> float:
    return float(ET.parse(path).getroot().attrib["width"].removesuffix("pt")) / 72


@pytest.fixture(scope="module")
def attribution_result():
    generator = RegionGenerator().eval()
    return attribute(generator, inversion_of(generator, specialised_alphas()),
                     labels=region_labels(2), vocabulary=REGION_VOCABULARY, progress=False)


@pytest.fixture(scope="module")
def edit_result():
    codes = torch.tensor([[[0.3, 0.0], [0.0, 0.3]]])  # code 0 paints the top, code 1 the bottom
    result = edit(BrightnessToy().eval(), toy_inversion(codes),
                  Direction("top", np.array([1.0, 0.0]), "z", "file"),
                  EditSettings(steps=5, range=1.0), segmenter=ThresholdSegmenter(),
                  progress=False)
    result.extra["code_classes"] = {"img0": ["bright", "dark"]}
    return result


def study_rows():
    rows = []
    for layer_index, layer in enumerate(["z", "4x4", "8x8"]):
        for image in ("a", "b"):
            rows.append({"generator": "tiny", "task": "inversion", "layer": layer,
                         "layer_index": layer_index, "codes": 1 if layer_index == 0 else 3,
                         "metric": "psnr", "value": 20.0 + layer_index + (image == "b"),
                         "image": image})
    return rows


def every_figure(attribution_result, edit_result):
    attribution_rows = [{"generator": "tiny", "task": "inversion", "layer": name,
                         "layer_index": i, "class": klass, "share": share, "color": None}
                        for i, name in ((1, "4x4"), (2, "8x8"))
                        for klass, share in (("top", 0.6), ("unassigned", 0.4))]
    return {
        "attribution_grid": figures.attribution_grid(attribution_result, 0),
        "code_class_heatmap": figures.code_class_heatmap(attribution_result),
        "class_histogram": figures.class_histogram(attribution_result),
        "metric_vs_layer": figures.metric_vs_layer(study_rows()),
        "metric_vs_codes": figures.metric_vs_codes(study_rows()),
        "attribution_by_layer": figures.attribution_by_layer(attribution_rows),
        "edit_strip": figures.edit_strip(edit_result, 0, "bright"),
        "edit_curves": figures.edit_curves(edit_result, "bright"),
        "edit_disentanglement": figures.edit_disentanglement(edit_result),
        "edit_changed": figures.edit_changed(edit_result, 0),
        "tuning_summary": figures.tuning_summary([
            {"image": f"im{i}", "status": "ok", "psnr": 24.0 + i,
             "tuning": {"psnr_untuned": 22.0 + i, "sample_change": 1.5 * i}} for i in range(3)]),
    }


def test_every_builder_exports_vector_files_with_text_of_at_least_7_pt(
        tmp_path, attribution_result, edit_result):
    from pypdf import PdfReader

    built = every_figure(attribution_result, edit_result)
    assert len(built) == 11
    for name, figure in built.items():
        png, pdf, svg = figures.save_figure(figure, tmp_path / f"{name}.png", ALL_FORMATS)
        assert png.stat().st_size > 1000, name
        sizes = svg_font_sizes(svg)
        assert sizes and min(sizes) >= figures.MIN_FONT_PT, (name, sorted(set(sizes)))
        assert "<text" in svg.read_text()  # text kept as text (svg.fonttype none)
        assert svg_width_inches(svg) == pytest.approx(COLUMN_WIDTHS["double"], abs=0.01), name
        reader = PdfReader(pdf)
        page = reader.pages[0]
        assert float(page.mediabox.width) / 72 == pytest.approx(6.9, abs=0.01), name
        assert page.extract_text().strip(), name  # TrueType text that a reader can select
        fonts = {font["/Subtype"] for font in
                 (page["/Resources"]["/Font"].get_object().values())}
        assert fonts and "/Type3" not in fonts, (name, fonts)  # pdf.fonttype 42: TrueType


def test_single_column_width_and_bad_choices(tmp_path, attribution_result):
    figure = figures.class_histogram(attribution_result)
    _, svg = figures.save_figure(figure, tmp_path / "h.png", FigureOutput(("svg",), "single"))
    assert svg_width_inches(svg) == pytest.approx(3.3, abs=0.01)
    assert FigureOutput("pdf", "4.5").inches == 4.5
    with pytest.raises(InputError, match="figure_formats 'png,eps': choose from png, pdf, svg"):
        FigureOutput("png,eps")
    with pytest.raises(InputError, match="figure_width must be single, double or inches"):
        FigureOutput("pdf", "wide")
    with pytest.raises(InputError, match=r"in \[1, 20\], got 0.1"):
        FigureOutput("pdf", 0.1)


def texts(figure) -> list[str]:
    figure.canvas.draw()
    return [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]


def test_the_edit_strip_labels_its_rows_columns_and_what_moves(edit_result):
    shown = texts(figures.edit_strip(edit_result, 0, "bright"))
    assert {"all codes", "code 0: bright", "code 1: dark"} <= set(shown)
    assert {"t = -1", "t = -0.5", "t = 0\n(input)", "t = +0.5", "t = +1"} <= set(shown)
    caption = next(t for t in shown if t.startswith("each row moves"))
    # all codes move: the top's red is 0.3 + 2t, so the top is dark at t = -1 and bright at
    # t = +1, while the bottom (green 0.3) stays bright: shares 0.5 and 1
    assert "bright share 0.500 (first t) to 1.000 (last t) for all codes" in caption


def test_the_edit_curves_name_the_strongest_sets_and_state_the_effect(edit_result):
    shown = texts(figures.edit_curves(edit_result, "bright"))
    title = next(t for t in shown if t.startswith("bright under the edit"))
    # bright everywhere at t = 0 (red 0.3 > 0.25), the top half dark from t = -0.5 on
    assert "all codes -0.500 at the first t, +0.000 at the last" in title
    assert {"all codes", "code 0: bright", "code 1: dark"} <= set(shown)
    assert not any("barely moves" in t for t in shown)


def test_a_negligible_effect_is_said_in_words_and_not_called_monotone(edit_result):
    still = edit(BrightnessToy().eval(), toy_inversion(torch.tensor([[[0.0, 0.0]]])),
                 Direction("none", np.array([0.0, 1e-4]), "z", "file"),
                 EditSettings(steps=3, range=1.0, code_sets="all"),
                 segmenter=ThresholdSegmenter(), progress=False)
    shown = texts(figures.edit_curves(still, "bright"))
    assert any(f"within {EFFECT_NOISE:g} of the image" in t for t in shown)
    assert still.summary("bright")[0]["target_monotone"] is None
    assert edit_result.summary("bright")[0]["target_monotone"] is True


def test_figures_command_redraws_stored_results_without_recomputing(tmp_path, capsys,
                                                                     tiny_pggan, face_pngs):
    from inversion.generators import save_generator
    from mganprior.cli import main

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "2", "--codes", "2", "--quiet"]) == 0
    labels = tmp_path / "labels"
    labels.mkdir()
    from helpers import write_png
    from inversion.rundir import RunDirectory

    for name in RunDirectory(run).finished():
        write_png(labels / f"{name}.png", np.tile(np.arange(16, dtype=np.uint8) // 8, (16, 1)))
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet",
                 "--figure-formats", "svg", "--figure-width", "single"]) == 0
    assert (run / "attribution" / "figures" / "heatmap.svg").is_file()
    assert main(["directions", "sefa", "--checkpoint", checkpoint, "--count", "1", "--out",
                 str(tmp_path / "dirs")]) == 0
    assert main(["edit", str(run), "--direction", str(tmp_path / "dirs" / "sefa_00.npy"),
                 "--steps", "3", "--quiet"]) == 0
    strip = run / "edits" / "sefa_00" / "figures" / "strip-img0.png"
    assert strip.is_file() and not strip.with_suffix(".pdf").exists()
    stored = (run / "attribution" / "parts").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["figures", str(run), "--figure-formats", "pdf,svg"]) == 0
    assert "figures redrawn as png, pdf, svg" in capsys.readouterr().out
    for path in (strip, run / "attribution" / "figures" / "histogram.png",
                 run / "attribution" / "figures" / "images" / "img0.png"):
        assert path.with_suffix(".pdf").is_file() and path.with_suffix(".svg").is_file(), path
    assert (run / "attribution" / "parts").stat().st_mtime_ns == stored  # nothing recomputed
    assert main(["figures", str(tmp_path / "labels")]) == 2
    assert "is not a run, study, attribution or edit directory" in capsys.readouterr().err


def test_cross_domain_layers_line_up_by_feature_size():
    """Priors of other depths share an x axis of feature size: a DCGAN's 8x8 layer sits above a
    PGGAN's 8x8 layer, not above the PGGAN layer with the same index."""
    layers = {"deep": [("z", "4x1x1"), ("d1", "8x4x4"), ("d2", "8x8x8"), ("d3", "8x8x8")],
              "shallow": [("z", "4x1x1"), ("s1", "8x8x8"), ("s2", "8x16x16")]}
    rows = [{"generator": g, "task": "inversion", "layer": name, "layer_index": i,
             "layer_shape": shape, "codes": 3, "metric": "psnr", "value": 20.0 + i,
             "image": "a"} for g, listing in layers.items() for i, (name, shape) in
            enumerate(listing)]
    figure = figures.metric_vs_layer(rows, hue="generator")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["z", "4x4", "8x8", "16x16"]
    import pandas as pd

    data = pd.DataFrame(rows)
    data["x"] = figures._feature_side(data)
    keys = list(zip(data["generator"], data["layer"], strict=True))
    positions = dict(zip(keys, figures._side_positions(data), strict=True))
    assert positions[("deep", "d2")] == positions[("shallow", "s1")] == 3.0
    assert positions[("deep", "d3")] == 3.25 and positions[("deep", "d1")] == 2.0


def test_no_two_classes_of_a_figure_share_a_colour():
    chosen = figures.distinct_colors({"ceiling": (120, 120, 120), "wall": (122, 121, 120),
                                      "sky": "#ffffff", "bed": (0, 0, 255), "odd": None})
    assert np.allclose(chosen["ceiling"], np.array([120, 120, 120]) / 255)  # kept
    assert np.allclose(chosen["bed"], [0, 0, 1])
    names = list(chosen)
    for i, a in enumerate(names):
        assert np.linalg.norm(chosen[a] - 1) >= figures.MIN_COLOR_DISTANCE  # not white
        for b in names[i + 1:]:
            assert np.linalg.norm(chosen[a] - chosen[b]) >= figures.MIN_COLOR_DISTANCE, (a, b)
