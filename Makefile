# The two README commands: `make run` (set up + main job) and `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
GRID ?= ablations/losses.yaml
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup run test test-all test-slow lint corpus smoke figures tables clean-results zoo

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m bench.run --grid $(GRID)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(PY) -m ruff check bench tests scripts

corpus: setup
	$(PY) -m bench.data build --size default

smoke: setup
	$(PY) -m bench.run --grid ablations/smoke.yaml

# regenerate every table between bench.tables markers in README.md and results/*/README.md
tables: setup
	$(PY) -m bench.tables --update README.md $(wildcard results/*/README.md) docs/results.md

# redraw the figures, REPORT.md and report.html of a finished run: make figures RUN=results/losses
RUN ?= results/losses
figures: setup
	$(PY) -m bench.figures --run $(RUN)
