# Two commands on a fresh machine: `make demo` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test fuzz lint benchmarks docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list or the pins change. The constraints file keeps pip on the
# pinned torch/torchvision; gan-face-generate (the DigiFace weights) and mit-semseg (CSAIL
# segmenter classes) go in without their heavy requirements; the .pth hook makes
# `import torchvision` work where its extension cannot load.
# Why each step: docs/architecture.md.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,hf]"
	$(PY) -m pip install --quiet --no-deps gan-face-generate==1.1.1 mit-semseg==1.0.0
	$(PY) -m mganprior.torchvision_fix
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/mganprior demo --out runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(VENV)/bin/ruff check .

# The readers' fuzzing suite with many more examples than `make test` runs (tests/test_fuzz.py).
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/test_fuzz.py

lint: setup
	$(VENV)/bin/ruff check .

docs: setup
	$(PY) docs/api.py docs/api

benchmarks: setup
	$(PY) benchmarks/inversion.py
	$(PY) benchmarks/recipes.py
	$(PY) benchmarks/attribution.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/threads.py --contention
	$(PY) benchmarks/segmenters.py
	$(PY) benchmarks/stylegan1.py
	$(PY) benchmarks/projector.py
	$(PY) benchmarks/gpu.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
