# Two entry points a fresh machine needs (see README):
#   make demo   -- set up the virtualenv, make synthetic data, train a small model, evaluate, draw predictions
#   make test   -- set up the virtualenv and run the test suite
# Both create or reuse .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= out/demo

.PHONY: venv demo test clean

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

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf out build *.egg-info
