# make demo: the main job on the built-in data.   make test: the test suite.
# make test-fast: the suite without the slow tests.   make bench: the benchmarks (bench/).
# All create and use a local virtual environment (.venv) with the tested versions
# (requirements-lock.txt, as pip constraints); pyproject.toml declares the compatible ranges.
# Python >= 3.12 (jax 0.12 needs it): python3.12 / python3.13 on the PATH, else pyenv's.
PYTHON ?= $(firstword $(foreach v,3.12 3.13,$(shell python$(v) -c 'print("python$(v)")' \
	2>/dev/null)) $(wildcard $(HOME)/.pyenv/versions/3.1[23]*/bin/python3) python3)
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements-lock.txt
# The installer: uv (from the lock, into the venv) when it installed, else pip. The same
# packages from the same lock; a clean clone's test set installs in ~45 s instead of ~2 min.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set, a venv without .pyc
# files compiles jax and torch from source in every process (import jax + flax: 3.3 s, not 1.1).
PIP = $(if $(wildcard $(VENV)/bin/uv),$(VENV)/bin/uv pip install --compile-bytecode --python $(PY),\
	$(PY) -m pip --disable-pip-version-check install --progress-bar off) -c $(LOCK)

.PHONY: demo test test-fast bench lock clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 12) and "jaxseg needs Python >= 3.12 \
	(jax 0.12); found " + sys.version.split()[0] + ": make PYTHON=/path/to/python3.12 ...")'
	@echo "== creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "== installing uv, the installer (pip installs instead if it cannot be had)"
	-$(PY) -m pip --disable-pip-version-check install --progress-bar off -q -c $(LOCK) uv

# What jaxseg needs to run (make demo): jax, flax, optax, orbax, grain, ... (~0.7 GB).
$(VENV)/.runtime: $(VENV)/bin/python pyproject.toml $(LOCK)
	@echo "== installing jaxseg and its run-time dependencies (~0.7 GB)"
	$(PIP) -e .
	touch $@

# What the tests and benchmarks compare against: PyTorch, torchvision, torchattacks (test
# references only, never needed by jaxseg at run time). For Python 3.12 PyPI serves only
# torch's CUDA build (~4.6 GB with its libraries; it runs on CPU). No CPU torchvision build
# exists for it, so torchvision and torchattacks install without their dependencies.
$(VENV)/.test: $(VENV)/.runtime
	@echo "== installing the test references: torch (~4.6 GB), torchvision, torchattacks, pytest"
	$(PIP) torch -e '.[test]'
	$(PIP) --no-deps torchvision torchattacks
	touch $@

demo: $(VENV)/.runtime
	$(PY) -m jaxseg.cli.demo

test: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15

# The inner loop: everything but the tests marked slow (multi-process, training runs, long
# attacks).
test-fast: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow"

bench: $(VENV)/.test
	$(PY) -m bench.forward_speed
	$(PY) -m bench.forward_speed --arch deeplabv3_resnet50
	$(PY) -m bench.train_speed
	$(PY) -m bench.train_speed --arch deeplabv3_resnet50
	$(PY) -m bench.attack_speed
	$(PY) -m bench.winograd_shapes
	$(PY) -m bench.data_pipeline
	$(PY) -m bench.loop_policy
	$(PY) -m bench.init_compile

# After a tested upgrade in the test environment: write its exact set as the new lock.
lock: $(VENV)/.test
	{ sed -n '/^#/p' $(LOCK); $(PY) -m pip freeze --exclude-editable | grep -v '^#'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) demo_output
