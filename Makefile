# Quick start: `make test` and `make demo`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch, only for .pt import/export and the parity tools.
# On a GPU box point this at the build you want, e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
# Two pytest-xdist workers, one test file each at a time (module fixtures compile once):
# most of a test's time is single-threaded XLA compilation, so on this 2-core CI machine the
# suite took 25.5 min instead of 37.7. `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadfile --durations=25

.PHONY: install test test-fast lint fmt demo demo-long bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[torch,dev,landmarks]"
# Only the headless OpenCV (setup.cfg: scenedetect-headless). A venv made when setup.cfg asked
# for `scenedetect` also holds the GUI opencv-python; each GUI/headless pair writes the same
# files, so removing the GUI packages deletes files of the headless ones: reinstall those
# (same versions, no deps) after.
	if $(PY) -m pip show --quiet opencv-python >/dev/null 2>&1; then \
	  $(PY) -m pip uninstall --quiet --yes opencv-python scenedetect && \
	  $(PY) -m pip install --quiet --no-deps --force-reinstall \
	    $$($(PY) -m pip list --format=freeze | grep -iE '^(opencv-python-headless|scenedetect-headless)=='); \
	fi
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (multi-process runs, long training, CLI matrices).
test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: install
	bash scripts/demo.sh

# Longer training (about 40 minutes on 2 CPU cores): more speakers, SyncNet and Diff2Lip
# steps, more pairs scored.
demo-long: install
	OUT=$${OUT:-demo_long_out} CLIPS=$${CLIPS:-30} SYNC_STEPS=$${SYNC_STEPS:-1500} D2L_STEPS=$${D2L_STEPS:-2400} \
	  PAIRS=$${PAIRS:-6} RECON=$${RECON:-4} bash scripts/demo.sh

bench: install
	$(PY) benchmarks/unet.py --config=configs/diff2lip.py:tiny

clean:
	rm -rf $(VENV) demo_out demo_long_out .pytest_cache
