# Two entry points a fresh machine needs (see README):
#   make demo   -- set up the virtualenv, then `maskrcnn-deploy demo`: data, training, export, FP16/INT8, every backend checked
#   make test   -- set up the virtualenv and run the test suite
# Both create or reuse .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= out/demo

.PHONY: venv browser demo test clean

venv: $(STAMP)

# torchvision's registry wheels are CUDA builds of torch (they run on CPU-only machines);
# installing both by range lets pip pick a matching pair.
# (re)install when the build inputs change, including which folders are packages (editable installs map them)
$(STAMP): pyproject.toml setup.py plugins/build_native.py $(wildcard plugins/roi_align/*) $(wildcard */__init__.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=77" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "tensorrt-stubs>=10,<11"
	touch $(STAMP)

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

test: venv browser
	$(PY) -m pytest -q

clean:
	rm -rf out build *.egg-info
