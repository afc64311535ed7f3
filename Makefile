# make demo: the main job on the built-in data.   make test: the test suite.
# make test-fast: the suite without the slow tests.   make bench: the benchmarks (bench/).
# Both create and use a local virtual environment (.venv) with pinned versions.
# Python >= 3.12 (jax 0.12 needs it): python3.12 / python3.13 on the PATH, else pyenv's.
PYTHON ?= $(firstword $(foreach v,3.12 3.13,$(shell python$(v) -c 'print("python$(v)")' \
	2>/dev/null)) $(wildcard $(HOME)/.pyenv/versions/3.1[23]*/bin/python3) python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml Makefile
	# from scratch: a venv of another Python version cannot be upgraded in place
	rm -rf $(VENV)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 12) and "jaxseg needs Python >= 3.12 \
	(jax 0.12); found " + sys.version.split()[0] + ": make PYTHON=/path/to/python3.12 ...")'
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that nothing pulls another build in through a range (for Python
	# 3.12 PyPI has only its CUDA build: it runs on CPU and is a test reference only).
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[torch,test]'
	# Test / benchmark references only; no CPU torchvision build exists, so no deps.
	$(PIP) install --no-deps torchvision==0.28.0 torchattacks==3.5.1
	touch $@

demo: $(VENV)/.installed
	$(PY) -m jaxseg.cli.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --durations=10

# The inner loop: everything but the tests marked slow (multi-process, training runs, long
# attacks); under 3 minutes on 2 cores.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m bench.forward_speed
	$(PY) -m bench.train_speed
	$(PY) -m bench.attack_speed
	$(PY) -m bench.data_pipeline
	$(PY) -m bench.loop_policy

clean:
	rm -rf $(VENV) demo_output
