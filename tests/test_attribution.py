"""Attribution: known answers on a hand-built generator, each step on its own, batching, files."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.attribution import (
    UNASSIGNED,
    AttributionSettings,
    ablated_renders,
    ablation_mask,
    assign_classes,
    attribute,
    binarize,
    code_ranks,
    difference_maps,
    iou_with_classes,
    parse_binarization,
)
from analysis.attribution_files import load_attribution, save_attribution
from helpers import (
    REGION_VOCABULARY,
    RegionGenerator,
    inversion_of,
    region_labels,
    region_masks,
    specialised_alphas,
)
from inversion.composition import code_cuts, render
from mganprior.core.errors import InputError


# -- known answers -----------------------------------------------------------------------------
def test_each_code_is_attributed_to_its_region_with_iou_one():
    generator = RegionGenerator().eval()
    inversion = inversion_of(generator, specialised_alphas())
    result = attribute(generator, inversion, labels=region_labels(2), vocabulary=REGION_VOCABULARY,
                       progress=False)
    assert result.assigned.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert torch.allclose(result.assigned_iou, torch.ones(2, 3))
    # D_k: region k loses 0.9 of its two channels' colour (0.4 each): 0.72 in one of three
    # colour channels, 0.24 as a channel mean; zero everywhere else.
    masks = region_masks()
    for k in range(3):
        assert torch.allclose(result.differences[:, k], (0.24 * masks[k]).expand(2, 8, 8),
                              atol=1e-6)
        assert torch.equal(result.binary[:, k], masks[k].bool().expand(2, 8, 8))
    assert torch.allclose(result.zeroed_fraction, torch.full((2, 3), 2 / 6))
    assert result.summary()["assigned_fraction"] == 1.0


def test_a_code_spanning_two_regions_goes_to_the_larger_overlap():
    generator = RegionGenerator().eval()
    alphas = torch.full((1, 2, 6), 0.05)
    alphas[0, 0, 0:4] = 0.9  # top (32 px) and bottom-left (16 px): IoU 32/48 vs 16/48
    alphas[0, 1, 4:6] = 0.9
    result = attribute(generator, inversion_of(generator, alphas), labels=region_labels(1),
                       vocabulary=REGION_VOCABULARY, progress=False)
    assert result.assigned.tolist() == [[0, 2]]
    assert result.iou[0, 0].tolist() == pytest.approx([32 / 48, 16 / 48, 0.0])


def test_alphas_below_the_threshold_zero_nothing_and_leave_codes_unassigned():
    generator = RegionGenerator().eval()
    alphas = torch.rand(2, 3, 6) * 0.19 + 0.005
    result = attribute(generator, inversion_of(generator, alphas), labels=region_labels(2),
                       vocabulary=REGION_VOCABULARY, progress=False)
    assert torch.equal(result.differences, torch.zeros(2, 3, 8, 8))
    assert not result.binary.any()
    assert (result.assigned == UNASSIGNED).all()
    assert result.summary()["codes_assigned"] == 0


def test_min_iou_cut_leaves_weak_matches_unassigned():
    generator = RegionGenerator().eval()
    alphas = torch.full((1, 1, 6), 0.05)
    alphas[0, 0, 0:6] = 0.9  # changes the whole image: IoU 0.5 with top, 0.25 with each quarter
    inversion = inversion_of(generator, alphas)
    kept = attribute(generator, inversion, labels=region_labels(1), vocabulary=REGION_VOCABULARY,
                     progress=False)
    assert kept.assigned.tolist() == [[0]] and kept.assigned_iou.item() == pytest.approx(0.5)
    cut = attribute(generator, inversion, labels=region_labels(1), vocabulary=REGION_VOCABULARY,
                    settings=AttributionSettings(min_iou=0.6), progress=False)
    assert cut.assigned.tolist() == [[UNASSIGNED]]
    assert cut.assigned_iou.item() == pytest.approx(0.5)


# -- the steps one by one ----------------------------------------------------------------------
def test_ablation_mask_modes():
    alphas = torch.tensor([[[0.1, 0.3, 0.25, 0.05], [0.6, 0.0, 0.19, 0.21]]])
    assert ablation_mask(alphas, 0.2).tolist() == [[[False, True, True, False],
                                                    [True, False, False, True]]]
    # relative to 1/N (N = 2): zero entries above 1.0 / 2 = 0.5
    assert ablation_mask(alphas, 1.0, "codes").tolist() == [[[False] * 4,
                                                             [True, False, False, False]]]
    # per-code quantile 0.5: entries above each code's median
    assert ablation_mask(alphas, 0.5, "quantile").tolist() == [[[False, True, True, False],
                                                                [True, False, False, True]]]


def test_binarize_methods():
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, :, :2] = 0.5  # an eight-pixel region that changed
    maps[0, :, 2, 0] = 0.1
    assert binarize(maps, "otsu")[0, 0].sum() == 8
    assert binarize(maps, "fixed:0.05")[0, 0].sum() == 9
    assert binarize(maps, "quantile:0.9")[0, 0].sum() == 8  # the top 10 %: ties above it all
    constant = torch.full((1, 1, 4, 4), 0.3)
    assert binarize(constant, "otsu").all()
    assert not binarize(torch.zeros(1, 1, 4, 4), "otsu").any()
    assert not binarize(torch.full((1, 1, 4, 4), 1e-4), "otsu").any()  # below min_difference


@pytest.mark.parametrize("text", ["mean", "quantile", "quantile:1.5", "fixed:-1", "fixed:x",
                                  "otsu:3"])
def test_bad_binarization_is_refused(text):
    with pytest.raises(InputError, match="binarize"):
        parse_binarization(text)


def test_iou_known_answer_with_unlabelled_pixels():
    labels = torch.tensor([[[0, 0, 1, 255]]])  # one row of four pixels; the last is unlabelled
    binary = torch.tensor([[[[True, False, True, True]], [[False, False, False, False]]]])
    iou = iou_with_classes(binary, labels, 3)
    # code 0 vs class 0: |{0}| / |{0, 1, 2, 3}| = 1/4; vs class 1: |{2}| / |{0, 2, 3}| = 1/3
    assert iou[0, 0].tolist() == pytest.approx([1 / 4, 1 / 3, 0.0])
    assert iou[0, 1].tolist() == [0.0, 0.0, 0.0]
    assigned, best = assign_classes(iou, 0.05)
    assert assigned.tolist() == [[1, UNASSIGNED]]
    assert best[0].tolist() == pytest.approx([1 / 3, 0.0])


def test_ties_go_to_the_lower_class_and_ranks_order_by_difference():
    assigned, _ = assign_classes(torch.tensor([[[0.4, 0.4, 0.1]]]), 0.05)
    assert assigned.tolist() == [[0]]
    differences = torch.zeros(1, 3, 2, 2)
    differences[0, 0] = 0.1
    differences[0, 2] = 0.5
    assert code_ranks(differences).tolist() == [[2, 3, 1]]


@pytest.mark.parametrize("fusion", ["sum", "mean"])
@pytest.mark.parametrize("name", ["tiny_pggan", "tiny_dcgan"])
def test_batched_ablation_equals_a_loop_of_full_renders(name, fusion, request):
    generator = request.getfixturevalue(name)
    layer = generator.layers[2]
    torch.manual_seed(3)
    codes = torch.randn(3, 5, generator.z_dim)
    alphas = torch.rand(3, 5, layer.channels) * 0.4  # about half the entries above 0.2
    zeroed = ablation_mask(alphas)
    with torch.no_grad():
        cut = code_cuts(generator, codes, layer)
        x_inv, ablated = ablated_renders(generator, cut, alphas, zeroed, layer, fusion,
                                         renders_per_pass=4)
        expected_x = render(generator, codes, alphas, layer, fusion).clamp(-1, 1)
        assert torch.allclose(x_inv, expected_x, atol=1e-5)
        for n in range(5):
            edited = alphas.clone()
            edited[:, n] = torch.where(zeroed[:, n], 0.0, alphas[:, n])
            expected = render(generator, codes, edited, layer, fusion).clamp(-1, 1)
            assert torch.allclose(ablated[:, n], expected, atol=1e-5)
    maps = difference_maps(x_inv, ablated)
    assert maps.shape == (3, 5, generator.resolution, generator.resolution)


def test_cached_features_give_the_same_attribution(tiny_pggan):
    layer = tiny_pggan.layers[3]
    alphas = torch.rand(2, 4, layer.channels) * 0.4
    inversion = inversion_of(tiny_pggan, alphas, layer=layer.name)
    labels = torch.randint(0, 3, (2, 16, 16))
    plain = attribute(tiny_pggan, inversion, labels=labels, vocabulary=REGION_VOCABULARY,
                      progress=False, images_per_pass=1)
    with torch.no_grad():
        inversion.features = code_cuts(tiny_pggan, inversion.codes, layer)
    cached = attribute(tiny_pggan, inversion, labels=labels, vocabulary=REGION_VOCABULARY,
                       progress=False)
    assert torch.allclose(plain.differences, cached.differences, atol=1e-6)
    assert torch.equal(plain.assigned, cached.assigned)
    assert float(plain.reproduction_error.max()) < 1e-3


# -- a segmenter, records, files ---------------------------------------------------------------
class ColourSegmenter:
    """Labels each pixel by its strongest colour channel: red -> top, green -> bottom-left,
    blue -> bottom-right (what RegionGenerator paints)."""

    labels = REGION_VOCABULARY.names
    vocabulary = REGION_VOCABULARY
    device = torch.device("cpu")

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return images.argmax(dim=1)


def test_segmenting_the_reconstruction_and_the_target():
    generator = RegionGenerator().eval()
    inversion = inversion_of(generator, specialised_alphas(1))
    result = attribute(generator, inversion, segmenter=ColourSegmenter(), progress=False)
    assert torch.equal(result.segmentation, region_labels(1))
    assert result.assigned.tolist() == [[0, 1, 2]]
    target = torch.zeros(1, 3, 8, 8)
    target[:, 2] = 1  # all blue: every pixel is bottom-right
    on_target = attribute(generator, inversion, segmenter=ColourSegmenter(), segment="target",
                          targets=target, progress=False)
    assert (on_target.segmentation == 2).all()
    assert on_target.assigned.tolist() == [[2, 2, 2]]
    assert on_target.targets is not None


def test_records_summaries_and_files_round_trip(tmp_path):
    generator = RegionGenerator().eval()
    alphas = specialised_alphas(2)
    alphas[1, 2] = 0.05  # image 1's third code zeroes nothing
    result = attribute(generator, inversion_of(generator, alphas), labels=region_labels(2),
                       vocabulary=REGION_VOCABULARY, progress=False)
    rows = result.records()
    assert len(rows) == 6 and set(rows[0]) == {
        "image", "code", "rank", "class", "iou", "alpha_zeroed_fraction", "changed_fraction",
        "mean_difference"}
    assert rows[5]["class"] == "unassigned" and rows[5]["alpha_zeroed_fraction"] == 0
    classes = {row["class"]: row for row in result.class_rows()}
    table = result.class_summary()  # the same, as a DataFrame indexed by class
    assert list(table.index) == list(classes)
    assert table["codes"].tolist() == [row["codes"] for row in classes.values()]
    assert classes["top"]["codes"] == 2 and classes["bottom-right"]["codes"] == 1
    assert classes["bottom-right"]["images_present"] == 2
    assert classes["unassigned"]["codes"] == 1
    counts = result.rank_class_counts()
    assert counts.sum() == 6 and counts[:, -1].sum() == 1
    assert result.mean_iou_by_rank().shape == (3, 3)
    save_attribution(result, tmp_path / "attribution")
    loaded = load_attribution(tmp_path / "attribution")
    assert loaded.names == result.names and loaded.vocabulary == result.vocabulary
    assert torch.equal(loaded.assigned, result.assigned)
    assert torch.equal(loaded.binary, result.binary)
    assert torch.allclose(loaded.differences, result.differences, atol=1e-3)
    assert loaded.settings == result.settings
    text = (tmp_path / "attribution" / "attribution.csv").read_text().splitlines()
    assert text[0] == ("image,code,rank,class,iou,alpha_zeroed_fraction,changed_fraction,"
                       "mean_difference") and len(text) == 7


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0.0}, "threshold must be in"),
    ({"threshold": -1.0}, "threshold must be in"),
    ({"threshold": math.inf}, "threshold must be in"),
    ({"threshold": 2.0, "relative": "quantile"}, "quantile"),
    ({"relative": "median"}, "relative must be"),
    ({"difference": "lpips"}, "difference must be"),
    ({"min_iou": 1.5}, "min_iou must be"),
    ({"binarize": "otsu:1"}, "binarize"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        AttributionSettings(**kwargs)


def test_bad_label_maps_are_refused():
    generator = RegionGenerator().eval()
    inversion = inversion_of(generator, specialised_alphas(1))
    with pytest.raises(InputError, match=r"label maps are \[4, 4\].*8x8"):
        attribute(generator, inversion, labels=torch.zeros(1, 4, 4, dtype=torch.long),
                  vocabulary=REGION_VOCABULARY, progress=False)
    with pytest.raises(InputError, match=r"holds value 7.*3 classes"):
        attribute(generator, inversion, labels=torch.full((1, 8, 8), 7),
                  vocabulary=REGION_VOCABULARY, progress=False)
    with pytest.raises(InputError, match="img0 is empty"):
        attribute(generator, inversion, labels=torch.full((1, 8, 8), 255),
                  vocabulary=REGION_VOCABULARY, progress=False)
    with pytest.raises(InputError, match="exactly one"):
        attribute(generator, inversion, progress=False)
    with pytest.raises(InputError, match="target images"):
        attribute(generator, inversion, segmenter=ColourSegmenter(), segment="target",
                  progress=False)


def test_an_incompatible_generator_is_refused(tiny_pggan):
    generator = RegionGenerator().eval()
    inversion = inversion_of(generator, specialised_alphas(1))
    with pytest.raises(InputError, match="not the run's generator"):
        attribute(tiny_pggan, inversion, labels=region_labels(1), vocabulary=REGION_VOCABULARY,
                  progress=False)


def test_invert_can_keep_its_features_for_attribution(tiny_pggan):
    from inversion import Inversion, get_recipe, invert
    from inversion.engine import QUIET, InvertOptions

    targets = tiny_pggan.sample(2, seed=4)
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=3, codes=3, layer=4)
    result = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1],
                    options=InvertOptions(progress=False, keep_features=True))
    with torch.no_grad():
        expected = code_cuts(tiny_pggan, result.codes, result.layer)
    assert result.features is not None
    assert torch.allclose(result.features.features, expected.features, atol=1e-6)
    assert invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1],
                  options=QUIET).features is None


def test_figures_are_built_without_pyplot():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from reports.figures import attribution_grid, class_histogram, code_class_heatmap

    generator = RegionGenerator().eval()
    result = attribute(generator, inversion_of(generator, specialised_alphas(2)),
                       labels=region_labels(2), vocabulary=REGION_VOCABULARY, progress=False)
    before = plt.get_fignums()
    grid = attribution_grid(result, 1)
    titles = [ax.get_title() for ax in grid.axes]
    assert titles[:2] == ["reconstruction", "segmentation"]
    assert "code 0: top\nIoU 1.00" in titles
    assert isinstance(code_class_heatmap(result), Figure)
    assert isinstance(class_histogram(result), Figure)
    assert plt.get_fignums() == before
    with pytest.raises(IndexError):
        attribution_grid(result, 2)


def test_compiled_attribution_gives_the_eager_answer():
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    generator = RegionGenerator().eval()
    inversion = inversion_of(generator, specialised_alphas())
    eager, fast = (attribute(generator, inversion, labels=region_labels(2),
                             vocabulary=REGION_VOCABULARY, progress=False, compile=compile)
                   for compile in (False, True))
    assert fast.assigned.tolist() == eager.assigned.tolist() == [[0, 1, 2], [0, 1, 2]]
    torch.testing.assert_close(fast.differences, eager.differences, atol=1e-6, rtol=0)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo traced the compiled passes
