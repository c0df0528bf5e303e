# Two entry points (README): `make run` and `make test`. Both install what is missing.
PYTHON ?= python3
# Xvfb and the X/GL libraries Qt 6 needs for headless napari (tests and --screenshot)
APT_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-render-util0 \
	libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libegl1 libgl1 libfontconfig1 libdbus-1-3 \
	libcgal-dev libeigen3-dev
# pygalmesh (GPL-3, optional extra `mesh`) has no wheel: built once (about 6 min) into this cache
WHEELS ?= $(HOME)/.cache/tomomech-wheels
# core: what `make run` needs (porespy for the descriptors; no napari, no pygalmesh); full: tests, napari, docs and pygalmesh
CORE_STAMP := .deps-core
DEPS_STAMP := .deps-installed

.PHONY: run test deps lint bench docs

$(CORE_STAMP): pyproject.toml Makefile
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[porespy]"
	@touch $@

$(DEPS_STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@$(PYTHON) -c "import pygalmesh" 2>/dev/null || { \
	  ls $(WHEELS)/pygalmesh-*.whl >/dev/null 2>&1 || $(PYTHON) -m pip wheel -q --no-deps pygalmesh -w $(WHEELS); \
	  $(PYTHON) -m pip install -q --disable-pip-version-check --no-index --find-links $(WHEELS) pygalmesh; }
	@touch $@ $(CORE_STAMP)

deps: $(DEPS_STAMP)

run: $(CORE_STAMP)
	tomomech run samples/matbox_nmc/demo.toml -o results/matbox_demo
	tomomech run samples/matbox_nmc/demo_cohesive.toml -o results/matbox_demo_cohesive

test: deps
	$(PYTHON) -m pytest -q

lint: deps
	$(PYTHON) -m ruff check .

docs: deps
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict -d build/site

bench: deps
	$(PYTHON) benchmarks/elastic_step.py
