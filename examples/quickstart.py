# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # mganprior quickstart
#
# Load a committed GAN prior, invert four images with 20 latent codes composed at a layer
# (multi-code GAN prior), attribute every code to the semantic class it controls, and draw the
# figures. Everything here is offline and runs on a CPU. This file is a notebook in jupytext's
# percent format: open it in Jupyter with jupytext installed (`pip install jupytext`), or run
# `jupytext --to notebook examples/quickstart.py`. The test suite runs every cell with
# `MGANPRIOR_TINY=1` (a few iterations).

# %%
import os

TINY = os.environ.get("MGANPRIOR_TINY") == "1"
ITERATIONS = 5 if TINY else 150  # 150 iterations: about a minute on 2 CPU cores

# %% [markdown]
# ## A prior and four images
# `bedroom-pggan64` is a PGGAN this project trained on rendered bedrooms; its samples stand in
# for photos here (any `[B, 3, 64, 64]` tensor in [-1, 1] works, e.g. from
# `inversion.load_images`).

# %%
from mganprior.zoo import load_generator, load_segmenter

prior = load_generator("bedroom-pggan64")
G = prior.generator
x = G.sample(4, seed=1)
print(G.describe())
print([layer.describe() for layer in G.layers][:5], "...")

# %% [markdown]
# ## Inversion: 20 codes at a 16x16 layer
# `adam` is the measured recipe (`inversion/recipes.py`); `keep_features` keeps the per-code
# features so the attribution below skips a forward pass.

# %%
from inversion import Inversion, InvertOptions, get_recipe, invert

recipe = get_recipe("adam", "inversion").with_overrides(iterations=ITERATIONS)
result = invert(G, x, Inversion(), recipe, seeds=[0, 1, 2, 3], references=x,
                options=InvertOptions(keep_features=True, progress=False))
print("codes", tuple(result.codes.shape), "alphas", tuple(result.alphas.shape),
      "layer", result.layer.name)
print("PSNR (dB):", [round(m["psnr"], 2) for m in result.metrics])

# %% [markdown]
# ## Which class does each code control?
# Each code's strong channel weights (alpha > 0.2) are zeroed, the image re-rendered, and the
# changed region intersected with a segmentation; the best-IoU class is the code's.

# %%
from analysis.attribution import attribute

segmenter = load_segmenter("scenes-segmenter64")
attribution = attribute(G, result, segmenter=segmenter, progress=False)
attribution.class_summary()

# %% [markdown]
# ## Figures
# Every figure builder returns a matplotlib Figure; `save_figure` writes it.

# %%
from reports.figures import attribution_grid, class_histogram, code_class_heatmap

grid = attribution_grid(attribution, index=0)
heatmap = code_class_heatmap(attribution)
histogram = class_histogram(attribution)
[figure.get_size_inches().tolist() for figure in (grid, heatmap, histogram)]
