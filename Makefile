# Two entry points a fresh machine needs (see README):
#   make demo   -- set up the virtualenv, then `maskrcnn-deploy demo`: data, training, export, FP16/INT8, every backend checked
#   make test   -- set up the virtualenv and run the test suite, with the torch-free proof
#                  (tests/test_torch_free.py runs predict/check/bench in .venv-runtime, the base install only)
# Both create or reuse .venv (and `make test` .venv-runtime) and install what they need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= out/demo
# The tested dependency set: one hashed lock file per Python version (requirements/README.md)
PYVER  := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LOCK   := requirements/py$(PYVER).txt
LOCK_PYTHONS := 3.10 3.11 3.12 3.13
LATEST_VENV ?= .venv-latest
# The runtime-only environment: `pip install maskrcnn-deploy` without extras (no torch), from its own hashed lock
RUNTIME_VENV  ?= .venv-runtime
RUNTIME_PY    := $(RUNTIME_VENV)/bin/python
RUNTIME_LOCK  := requirements/runtime-py$(PYVER).txt
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed-stamp
# tests/test_torch_free.py runs the CLI with this interpreter (skipped without it, failed without it when CI is set)
RUNTIME_ENV   := MASKRCNN_DEPLOY_RUNTIME_PYTHON=$(abspath $(RUNTIME_PY))
# `make lock` re-resolves to the newest releases; `make lock LOCK_UPGRADE=` adds what pyproject.toml gained and
# keeps every other pin
LOCK_UPGRADE  ?= --upgrade

.PHONY: venv runtime-venv browser demo test test-runtime-only test-latest lock clean

venv: $(STAMP)

# Exactly the locked versions (every transitive package, torch's CUDA runtime wheels included), checked
# against their hashes; then the project itself, editable, without touching them. pyproject.toml keeps
# ranges for library users. Reinstalled when the build inputs change, including which folders are
# packages (editable installs map them).
$(STAMP): pyproject.toml setup.py plugins/build_native.py $(wildcard plugins/roi_align/*) $(wildcard */__init__.py) \
          $(wildcard requirements/*.txt)
	@test -f $(LOCK) || { echo "no lock file for Python $(PYVER) ($(LOCK)): use Python $(LOCK_PYTHONS), e.g. make PYTHON=python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/tensorrt-stubs.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The base install alone, as `pip install maskrcnn-deploy` gives it: the locked base dependencies (the full lock's
# versions), then the project editable without dependencies. Its build compiles the native RoIAlign library with
# g++ (setup.py, plugins/build_native.py: no torch), into plugins/ beside the one .venv uses (same Python, same file).
runtime-venv: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml setup.py plugins/build_native.py $(wildcard plugins/roi_align/*) \
                  $(wildcard */__init__.py) $(RUNTIME_LOCK)
	@test -f $(RUNTIME_LOCK) || { echo "no runtime lock file for Python $(PYVER) ($(RUNTIME_LOCK)): use Python $(LOCK_PYTHONS)"; exit 2; }
	test -x $(RUNTIME_PY) || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_PY) -m pip install --quiet --require-hashes --no-deps -r $(RUNTIME_LOCK)
	$(RUNTIME_PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(RUNTIME_STAMP)

# Refresh the lock files from pyproject.toml's ranges and requirements/*.in (needs uv: pip install uv). The runtime
# locks take the base dependencies at the full lock's versions (-c), so both environments test the same releases.
lock:
	for v in $(LOCK_PYTHONS); do \
	  uv pip compile pyproject.toml requirements/lock.in --extra all --extra test --generate-hashes $(LOCK_UPGRADE) \
	    --quiet \
	    --python-version $$v --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
	    -o requirements/py$$v.txt || exit 1; \
	  uv pip compile pyproject.toml requirements/runtime.in -c requirements/py$$v.txt --generate-hashes --quiet \
	    --python-version $$v --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
	    -o requirements/runtime-py$$v.txt || exit 1; \
	done
	uv pip compile requirements/tensorrt-stubs.in --no-deps --generate-hashes $(LOCK_UPGRADE) --quiet \
	  --custom-compile-command "make lock" -o requirements/tensorrt-stubs.txt

# The suite against the newest releases pyproject.toml's ranges allow (no lock), in its own virtualenv, so
# that drift is seen before users see it. PIP_CONFIG_FILE=/dev/null: a machine-wide pip configuration
# (this project's machines cap torch there) must not hide newer releases.
test-latest: browser
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	PIP_CONFIG_FILE=/dev/null $(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	PIP_CONFIG_FILE=/dev/null $(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]"
	PIP_CONFIG_FILE=/dev/null $(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --no-deps "tensorrt-stubs>=10,<11"
	$(LATEST_VENV)/bin/python -m pip list --format=freeze | grep -iE "^(torch|torchvision|numpy|onnx|onnxruntime|onnxscript)=="
	$(LATEST_VENV)/bin/python -m pytest -q

demo: venv
	$(VENV)/bin/maskrcnn-deploy demo --out $(DEMO_OUT)

# Headless Chromium renders the HTML check reports in tests/test_report_html.py (skipped without it,
# failed when CI is set). Installed with apt-get only when missing; never fails the build.
BROWSER_SKIP := the HTML report rendering test will be skipped
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "chromium is missing and there is no apt-get: $(BROWSER_SKIP)"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing chromium (apt-get) for the HTML report rendering test"; \
	  { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    || { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -qq --no-install-recommends chromium; }; } >/dev/null \
	  || echo "could not install chromium with apt-get (not root, no password-less sudo, or no network): $(BROWSER_SKIP)"; \
	fi

test: venv runtime-venv browser
	$(RUNTIME_ENV) $(PY) -m pytest -q

# Only the torch-free proof: graphs exported in .venv, predict/check/bench run in .venv-runtime
test-runtime-only: venv runtime-venv
	$(RUNTIME_ENV) $(PY) -m pytest -q tests/test_torch_free.py

clean:
	rm -rf out build *.egg-info $(LATEST_VENV) $(RUNTIME_VENV)
