# Two entry points for a fresh machine (Python 3.11 and pip): `make run` and `make test`.
# Both create .venv from nothing on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Real components the end-to-end tests run, as command:Debian-package.
SYSTEM_TOOLS := sshd:openssh-server ssh-keygen:openssh-client git:git gpg:gnupg \
	dnsmasq:dnsmasq-base knotd:knot kzonecheck:knot-dnssecutils

.PHONY: run test build bench schemas clean system-deps

# The compiled modules (compiler/native.py) are rebuilt whenever their sources change.
NATIVE_SOURCES := $(shell sed -n 's/^    "\(compiler\..*\)",$$/\1/p' compiler/native.py | tr . / | sed 's/$$/.py/')

$(STAMP): pyproject.toml setup.py compiler/native.py $(NATIVE_SOURCES) proto/galleon/v1/reconciler.proto
	@echo "installing Galleon into $(VENV) and compiling the compiler's hot modules (a few minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Install, or rebuild the compiled compiler modules after their sources changed.
build: $(STAMP)

# The main job on the bundled sample mesh and its live registry (sample-registry/): galleon serve with a
# real Envoy attached, requests flowing, then a pod added to the registry reaching Envoy.
run: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# Installs the Debian packages of SYSTEM_TOOLS that are missing (as root), or says which to install.
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do tool=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "the tests need Debian packages:$$missing; run: sudo apt-get install$$missing"; exit 1; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/compile.py

# Regenerate schemas/ from the Istio CRDs (only when ../shared/data changes).
schemas: $(STAMP)
	$(BIN)/python -m schemas.generate ../shared/data/istio-crds.gen.yaml

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache compiler/*.so compiler/validate/*.so compiler__mypyc*.so compiler/native_build.json
