# Two entry points for a fresh machine (Python 3.11 and pip): `make run` and `make test`.
# Both create .venv from nothing on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on the bundled sample mesh.
run: $(STAMP)
	$(BIN)/galleon validate sample-repo --summary

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/validate.py

# Regenerate schemas/ from the Istio CRDs (only when ../shared/data changes).
schemas: $(STAMP)
	$(BIN)/python -m schemas.generate ../shared/data/istio-crds.gen.yaml

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
