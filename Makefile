# nucleitune: `make demo` (sweep + export on bundled sample data, CPU) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED=0
export MLFLOW_DISABLE_TELEMETRY=true
export TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0

.PHONY: install browser demo ui trial test lint clean

install: $(STAMP)

# Re-runs only when the dependency files change; a second `make install` is a no-op.
$(STAMP): pyproject.toml scripts/install_detectron2.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	scripts/install_detectron2.sh $(PY)
	touch $(STAMP)

demo: install
	$(PY) -m search.run --space spaces/smoke.yaml
	$(PY) -m search.export --best
	@echo "MLflow UI: make ui"

ui: install
	$(PY) -m search.ui

trial: install
	$(PY) -m trainable.train --config trainable/demo_trial.yaml --out results/demo-trial

# Debian's chromium for the MLflow UI browser test (root, as on these machines and in CI).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: install browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=10 tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf results .pytest_cache
