# nucleitune: `make demo` (sweep + export on bundled sample data, CPU) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED=0
export MLFLOW_DISABLE_TELEMETRY=true
export TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0

.PHONY: install demo test lint clean

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
	$(PY) -m trainable.train --config trainable/demo_trial.yaml --data sample_data/nuclei --out results/demo-trial

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf results .pytest_cache
