# Two set-up commands (see README.md): `make demo` and `make test`. Both create the virtual
# environment on first use and install the package with its pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo_output
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m fairmonai.experiments run bundles/oct_glaucoma_fami demo --out $(DEMO_OUT)

# The default run excludes tests marked slow (pyproject.toml); `make test-slow` runs only those.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_group_metrics.py
	$(PY) benchmarks/bench_subgroups.py
	$(PY) benchmarks/bench_fami_noise_floor.py
	$(PY) benchmarks/bench_penalty_step.py --vit-small

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
