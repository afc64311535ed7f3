# make demo: the main job on the built-in data.   make test: the test suite.
# make test-fast: the suite without the slow tests.   make bench: the benchmarks (bench/).
# Both create and use a local virtual environment (.venv) with pinned versions.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, so that nothing pulls a CUDA build in through a range.
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
