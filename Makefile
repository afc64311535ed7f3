# make demo: the main job on the built-in data.   make test: the test suite.
# Both create and use a local virtual environment (.venv) with pinned versions.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, so that nothing pulls a CUDA build in through a range.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[torch,test]'
	# Test / benchmark references only; no CPU torchvision build exists, so no deps.
	$(PIP) install --no-deps torchvision==0.28.0 torchattacks==3.5.1
	touch $@

demo: $(VENV)/.installed
	$(PY) -m jaxseg.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --durations=10

bench: $(VENV)/.installed
	$(PY) bench/forward_speed.py
	$(PY) bench/train_speed.py
	$(PY) bench/attack_speed.py
	$(PY) bench/data_pipeline.py
	$(PY) bench/synthesis_speed.py

clean:
	rm -rf $(VENV) demo_output
