# Two entry points (README): `make run` and `make test`. Both install what is missing.
PYTHON ?= python3
APT_PACKAGES :=
DEPS_STAMP := .deps-installed

.PHONY: run test deps lint bench

$(DEPS_STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@

deps: $(DEPS_STAMP)

run: deps
	tomomech run samples/matbox_nmc/demo.toml -o results/matbox_demo

test: deps
	$(PYTHON) -m pytest -q

lint: deps
	$(PYTHON) -m ruff check .

bench: deps
	$(PYTHON) benchmarks/elastic_step.py
