"""What we borrow computes what the original computes: SeFa against genforce/sefa's
``factorize_weight``, InterFaceGAN against its ``train_boundary`` and ``linear_interpolate``, each
reference written in the test from the original's definition (../shared/REFERENCES.md) and run on
the same weights and samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.directions import sefa_directions, train_boundary
from analysis.editing import EditSettings, moved_codes
from helpers import SHARED, make_tiny_pggan, make_tiny_stylegan2
from mganprior.core.errors import InputError

STYLEGAN2_FIXTURE = SHARED / "fixtures" / "stylegan2" / "stylegan2-tiny32.pkl"


# -- SeFa -----------------------------------------------------------------------------------------
def genforce_factorize(weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """genforce/sefa ``factorize_weight`` after it has gathered the layers' weights ``[d, C_i]``:
    concatenate along axis 1 in float32, normalise each column, ``eig(W W^T)``; rows of the
    transposed eigenvector matrix, in eig's order."""
    weight = np.concatenate(weights, axis=1).astype(np.float32)
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(weight.dot(weight.T))
    return vectors.T, values


def assert_same_directions(ours, reference: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, values = reference
    order = np.argsort(values.real)[::-1]  # the original leaves eig's order; compare by rank
    for rank, direction in enumerate(ours):
        truth = vectors[order[rank]].real.astype(np.float64)
        cosine = abs(direction.vector @ truth) / np.linalg.norm(truth)
        assert cosine >= 0.999, f"direction {rank}: |cos| {cosine:.4f}"
        assert direction.meta["eigenvalue"] == pytest.approx(float(values[order[rank]].real),
                                                             rel=1e-5)


def stylegan2_style_weight(generator, name: str) -> np.ndarray:
    """genforce's ``style.weight.T`` of one layer: the raw affine weight ``[C, d]`` transposed
    (the equalised-lr gain is a per-layer scalar, which the column normalisation removes)."""
    block, kind = name.split(".")
    return getattr(getattr(generator.synthesis, block), kind).affine.weight.detach().numpy().T


def sefa_numbering(blocks: list[str]) -> list[str]:
    """genforce's ``synthesis.layer{i}`` for StyleGAN2: the convolutions in order (the first
    block has one), then ``output{last}``: the last block's ToRGB."""
    convs = [f"{blocks[0]}.conv1"] + [f"{b}.{c}" for b in blocks[1:] for c in ("conv0", "conv1")]
    return [*convs, f"{blocks[-1]}.torgb"]


@pytest.mark.skipif(not STYLEGAN2_FIXTURE.is_file(),
                    reason="the NVIDIA StyleGAN2 fixture lives in ../shared/fixtures/stylegan2, "
                    "which this clone does not have")
@pytest.mark.parametrize("layers, indices", [("all", range(8)), ("1,3,7", (1, 3, 7)),
                                             ("0,b8.conv1", (0, 2))])
def test_sefa_on_stylegan2_equals_genforce_sefa(layers, indices):
    from inversion.generators.formats import load_generator_file

    generator = load_generator_file(STYLEGAN2_FIXTURE)
    numbered = sefa_numbering(["b4", "b8", "b16", "b32"])
    reference = genforce_factorize([stylegan2_style_weight(generator, numbered[i])
                                    for i in indices])
    ours = sefa_directions(generator, 5, layers=layers)
    assert_same_directions(ours, reference)
    assert sum(d.meta["eigenvalue"] for d in sefa_directions(generator, 32, layers=layers)) == \
        pytest.approx(sum(stylegan2_style_weight(generator, numbered[i]).shape[1]
                          for i in indices), rel=1e-6)  # one per output channel


def test_sefa_default_layers_leave_out_the_intermediate_torgbs():
    generator = make_tiny_stylegan2()  # 16 px: b4, b8, b16
    numbered = sefa_numbering(["b4", "b8", "b16"])
    assert generator.sefa_layers() == numbered
    reference = genforce_factorize([stylegan2_style_weight(generator, n) for n in numbered])
    assert_same_directions(sefa_directions(generator, 4), reference)
    with pytest.raises(InputError, match="layers 'b99' is not a style layer"):
        generator.latent_weight("b99")


def test_sefa_on_pggan_equals_genforce_sefa():
    generator = make_tiny_pggan()
    weight = (generator.layer1.weight.detach()).numpy()  # genforce layer0: [C, z, 4, 4]
    reference = genforce_factorize([np.ascontiguousarray(
        np.flip(weight, (2, 3)).transpose(1, 0, 2, 3)).reshape(weight.shape[1], -1)])
    assert_same_directions(sefa_directions(generator, 5), reference)


def test_sefa_count_is_bounded_by_the_latent_size(tiny_pggan):
    with pytest.raises(InputError, match=r"count must be an integer in \[1, 8\].*got 1000000"):
        sefa_directions(tiny_pggan, 1000000)


# -- InterFaceGAN ---------------------------------------------------------------------------------
def official_selection(scores: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, int]:
    """InterFaceGAN's ``train_boundary`` up to the split: sort by score (descending), keep the
    top and bottom ``int(N * ratio)`` (at most N // 2), train on ``int(chosen * 0.7)`` of each."""
    order = np.argsort(scores)[::-1]
    chosen = min(int(len(scores) * ratio), len(scores) // 2)
    return order[:chosen], order[-chosen:], int(chosen * 0.7)


@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_equals_the_official_svc_on_the_same_split(seed):
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    truth = rng.normal(size=12)
    latents = rng.normal(size=(3000, 12))
    scores = latents @ truth + 2.0 * rng.normal(size=3000)  # noisy: the classes overlap
    fit = train_boundary(latents, scores, fraction=0.05, seed=seed)
    positives, negatives, train_num = official_selection(scores, 0.05)
    # the split is the original's: exactly train_num of each side, drawn from that side
    assert sorted(fit.train_positive.tolist() + fit.validation_positive.tolist()) == \
        sorted(positives.tolist())
    assert sorted(fit.train_negative.tolist() + fit.validation_negative.tolist()) == \
        sorted(negatives.tolist())
    assert len(fit.train_positive) == len(fit.train_negative) == train_num
    train = np.concatenate([fit.train_positive, fit.train_negative])
    labels = np.concatenate([np.ones(train_num, int), np.zeros(train_num, int)])
    classifier = SVC(kernel="linear").fit(latents[train], labels)
    official = classifier.coef_.reshape(-1) / np.linalg.norm(classifier.coef_)
    assert fit.normal @ official >= 0.999
    validation = np.concatenate([fit.validation_positive, fit.validation_negative])
    expected = classifier.score(latents[validation], np.concatenate(
        [np.ones(len(fit.validation_positive)), np.zeros(len(fit.validation_negative))]))
    assert fit.accuracy == pytest.approx(expected)


def test_boundary_skips_the_invalid_value_before_sorting():
    rng = np.random.default_rng(3)
    latents = rng.normal(size=(1000, 6))
    scores = latents[:, 0].copy()
    scores[:300] = -1.0  # e.g. no face found
    fit = train_boundary(latents, scores, fraction=0.1, invalid_value=-1.0)
    assert fit.samples == 700 and fit.chosen == 140
    chosen = np.concatenate([fit.train_positive, fit.validation_positive,
                             fit.train_negative, fit.validation_negative])
    assert chosen.min() >= 300


def official_linear_interpolate(code: np.ndarray, boundary: np.ndarray, start: float,
                                end: float, steps: int) -> np.ndarray:
    """InterFaceGAN's ``linear_interpolate`` for a ``[1, d]`` code (Z or W): absolute signed
    distances from the boundary's hyperplane."""
    linspace = np.linspace(start, end, steps) - code.dot(boundary.T)
    return code + linspace.reshape(-1, 1) * boundary


def test_absolute_edits_equal_interfacegan_linear_interpolate():
    rng = np.random.default_rng(4)
    boundary = rng.normal(size=(1, 10))
    boundary /= np.linalg.norm(boundary)
    codes = rng.normal(size=(2, 3, 10))
    settings = EditSettings(steps=6, start=-1.5, end=4.0, mode="absolute")
    ts = settings.ts()
    moving = torch.tensor([True, False, True])
    for step, t in enumerate(ts.tolist()):
        moved = moved_codes(torch.from_numpy(codes), torch.from_numpy(boundary[0]), t, moving,
                            "absolute").numpy()
        for b in range(2):
            for n in range(3):
                expected = official_linear_interpolate(codes[b, n:n + 1], boundary, -1.5, 4.0,
                                                       6)[step] if moving[n] else codes[b, n]
                np.testing.assert_allclose(moved[b, n], expected, atol=1e-6)  # t in fp32


def test_start_and_end_distances_and_the_symmetric_shorthand():
    assert EditSettings(steps=5, range=2.0).ts().tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert EditSettings(steps=3, start=0.0, end=3.0).ts().tolist() == [0.0, 1.5, 3.0]
    with pytest.raises(InputError, match="start and end must be given together"):
        EditSettings(start=1.0)
    with pytest.raises(InputError, match="start and end must differ"):
        EditSettings(start=1.0, end=1.0)
