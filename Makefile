# rewardpatch: `make demo` patches and verifies a bundled MMSeg checkout, `make test` runs the tests.
# Both do all set-up first, once: a second run skips what is already installed. `make test-fast`
# runs the tests that need no MMSeg stack (pytest -m "not stack"), in a venv without one.
# `make demo MMSEG_VERSION=0.30.0` does the same for an MMSeg 0.x checkout, with the 0.x stack.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RP := $(VENV)/bin/rewardpatch

# The verification stacks, pinned. Override TORCH_VERSION / TORCH_INDEX for a CUDA build
# (docs/stacks.md, "Your own GPU checkout").
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
# MMSeg 1.x: mmcv 2.x with its ops, mmengine
MMCV_VERSION := 2.1.0
MMENGINE_VERSION := 0.10.7
MMSEG_STACK_VERSION := 1.2.2
# MMSeg 0.x, in a venv of its own: mmcv-full 1.x with its ops and runner. With it, the
# linters MMSeg 0.x's .pre-commit-config.yaml pins (the tests lint what apply writes with
# them); mmcv 1.7.2's Config needs a yapf that has FormatCode(verify=...), as 0.30.0 does.
VENV0 ?= .venv-mmseg0
MMCV_FULL_VERSION := 1.7.2
MMSEG0_STACK_VERSION := 0.30.0
LINTERS0 := flake8==3.8.3 isort==5.10.1 yapf==0.30.0
# MMSeg 0.11 to 0.20 (and the DAFormer family) pin isort 4.3.21, whose settings their
# setup.cfg is written for: kept apart, in $(VENV0)/isort4, for the tests' PYTHONPATH.
ISORT4 := isort==4.3.21
# mmcv's setup.py imports pkg_resources, which setuptools 81 removed; torch needs >= 77.
SETUPTOOLS := setuptools>=77,<81

# The domain-adaptation family's stack (DAFormer, HRDA, MIC and SePiCo pin it): Python 3.8,
# torch 1.7.1, mmcv-full 1.3.7 built with its ops (cached like the others), mmsegmentation
# 0.16.0 installed (for plugin mode) and rewardpatch itself. tests/test_daformer_stack.py
# runs the inserted files, verify and plugin mode in it, through REWARDPATCH_DAFORMER_PYTHON.
VENV_DA ?= .venv-daformer
PYTHON38 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.8.*/bin/python) $(shell command -v python3.8 2>/dev/null))
DA_TORCH := 1.7.1
DA_MMCV_FULL := 1.3.7
DA_MMSEG := 0.16.0
# DAFormer's own pins, and those without which mmcv-full 1.3.7 breaks there: opencv 5 and
# Pillow 10 need a newer numpy, yapf 0.40 dropped the FormatCode(verify=...) it calls.
DA_PINS := numpy==1.19.2 torchvision==0.8.2 opencv-python-headless==4.5.5.64 yapf==0.32.0 "Pillow<10" \
	addict pyyaml prettytable matplotlib packaging
# The Pythons the tool runs on, as setup.cfg's classifiers list them (3.8 to 3.13: plugin mode,
# verify and config run in users' training environments). `make setup-pythons` makes one venv
# each, $(VENV_PYTHONS)/<version>, with rewardpatch installed from the working tree as users
# get it (`pip install .`, not editable); tests/test_python_versions.py runs its `rewardpatch`.
# Interpreters come from pyenv's versions, else from PATH (python3.8, ...).
PYTHONS ?= $(shell sed -n 's/^ *Programming Language :: Python :: \(3\.[0-9]*\) *$$/\1/p' setup.cfg)
PYENV_ROOT ?= $(HOME)/.pyenv
VENV_PYTHONS ?= .venv-py
PACKAGE_FILES := $(wildcard rewardpatch/*.py rewardpatch/*/*.py templates/*.py patches/*.toml)
# The inserted files run in the user's own environment: one venv per Python x torch that the
# matrix test runs them on (tests/test_torch_matrix.py: which break each covers), at
# $(VENV_TORCH)/<python>-<torch>. torch and numpy wheels are kept in $(TORCH_WHEELS), keyed
# by their file names (downloaded once, outside pip's cache: not twice on disk); torch >= 1.13
# brings its nvidia-* wheels (it does not import without). The 3.8-1.7.1 row is DAFormer's venv
# itself, linked, not a second copy. The matrix is sized by disk as well as by breaks: its venvs
# take 11 GB (torch 2.x with its nvidia-* wheels 4.5 GB alone); a CI machine's disk is shared.
# numpy: the last release with wheels for that Python (< 2: torch < 2.3 is built against numpy 1).
VENV_TORCH ?= .venv-torch
TORCH_MATRIX := 3.7-1.8.1 3.8-1.7.1 3.8-1.11.0 3.8-1.13.1 3.12-2.2.2
NUMPY_3.7 := 1.21.6
NUMPY_3.8 := 1.24.4
NUMPY_3.12 := 1.26.4

# The checkout `make demo` patches: 1.2.2 at ./mmsegmentation, any other at ./mmsegmentation-<version>.
MMSEG_VERSION ?= 1.2.2

CACHE ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/rewardpatch
TORCH_WHEELS ?= $(CACHE)/torch-wheels
DEMO_TREE ?= $(if $(filter 1.2.2,$(MMSEG_VERSION)),mmsegmentation,mmsegmentation-$(MMSEG_VERSION))
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS ?=

STAMP := $(VENV)/.rewardpatch-setup
# make test-fast: the tool and its test extras alone (no torch, no mmcv to build)
VENV_FAST ?= .venv-fast
STAMP_FAST := $(VENV_FAST)/.rewardpatch-setup
PY0 := $(VENV0)/bin/python
PIP0 := $(PY0) -m pip
STAMP0 := $(VENV0)/.rewardpatch-setup
PYDA := $(VENV_DA)/bin/python
STAMPDA := $(VENV_DA)/.rewardpatch-setup
STAMP_PYTHONS := $(VENV_PYTHONS)/.rewardpatch-setup
# make demo: the stack of the demo checkout's generation
DEMO_VENV := $(if $(filter 0.%,$(MMSEG_VERSION)),$(VENV0),$(VENV))
DEMO_STAMP := $(if $(filter 0.%,$(MMSEG_VERSION)),$(STAMP0),$(STAMP))
TORCH_STAMPS := $(TORCH_MATRIX:%=$(VENV_TORCH)/%/.rewardpatch-setup)

.PHONY: setup setup0 setup-daformer setup-pythons setup-torch-matrix demo lint test test-fast bench bench-learning clean
.DEFAULT_GOAL := demo

setup: $(STAMP)
setup0: $(STAMP0)
setup-pythons: $(STAMP_PYTHONS)
setup-torch-matrix: $(TORCH_STAMPS)

$(STAMP): Makefile setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade wheel "$(SETUPTOOLS)" numpy
	$(PIP) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==$(TORCH_VERSION)"
	@$(MAKE) --no-print-directory mmcv-wheel WHEEL_PY=$(PY) WHEEL_PACKAGE=mmcv WHEEL_VERSION=$(MMCV_VERSION)
	$(PIP) install --quiet "$$(cat $(VENV)/.mmcv-wheel)" "mmengine==$(MMENGINE_VERSION)" \
		"mmsegmentation==$(MMSEG_STACK_VERSION)" ftfy regex
	$(PIP) install --quiet --no-build-isolation -e ".[test]"
	$(PY) -c "import mmcv.ops, mmseg, rewardpatch; print('stack ready: mmcv', mmcv.__version__, 'with ops, mmseg', mmseg.__version__)"
	@touch $@

# The MMSeg 0.x stack (docs/stacks.md, "The MMSeg 0.x stack"): torch as above, mmcv-full built from its sdist,
# mmengine (for `config`, which reads configs with it),
# mmsegmentation 0.30.0 without its optional mmcls, rewardpatch itself, and the torchvision
# stand-in (rewardpatch/verify/torchvision_stand_in.py) that mmcv.runner's import needs.
$(STAMP0): Makefile setup.cfg rewardpatch/verify/torchvision_stand_in.py
	@test -x $(PY0) || $(PYTHON) -m venv $(VENV0)
	$(PIP0) install --quiet --upgrade wheel "$(SETUPTOOLS)" numpy
	$(PIP0) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==$(TORCH_VERSION)"
	@$(MAKE) --no-print-directory mmcv-wheel WHEEL_PY=$(PY0) WHEEL_PACKAGE=mmcv-full WHEEL_VERSION=$(MMCV_FULL_VERSION)
	$(PIP0) install --quiet "$$(cat $(VENV0)/.mmcv-wheel)" $(LINTERS0) "mmengine==$(MMENGINE_VERSION)" \
		matplotlib prettytable packaging
	$(PIP0) install --quiet --no-deps "mmsegmentation==$(MMSEG0_STACK_VERSION)"
	$(PIP0) install --quiet --no-deps --upgrade --target $(VENV0)/isort4 "$(ISORT4)"
	@site=$$($(PY0) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
		if [ -e "$$site/torchvision" ] && ! grep -qs "rewardpatch" "$$site/torchvision/__init__.py"; then \
			echo "$(VENV0) has a real torchvision: keeping it"; \
		else mkdir -p "$$site/torchvision" && \
			cp rewardpatch/verify/torchvision_stand_in.py "$$site/torchvision/__init__.py"; fi
	$(PIP0) install --quiet --no-build-isolation -e .
	$(PY0) -c "import mmcv.ops, mmcv.runner, mmseg.models, rewardpatch; print('0.x stack ready: mmcv-full', mmcv.__version__, 'with ops, mmseg', mmseg.__version__)"
	@touch $@

setup-daformer: $(STAMPDA)

$(STAMPDA): Makefile setup.cfg
	@test -n "$(PYTHON38)" || { echo "the DAFormer stack needs Python 3.8: pyenv install 3.8, or make PYTHON38=/path/to/python3.8"; exit 1; }
	@test -x $(PYDA) || $(PYTHON38) -m venv $(VENV_DA)
	$(PYDA) -m pip download --quiet --no-cache-dir --only-binary=:all: -d $(TORCH_WHEELS) "torch==$(DA_TORCH)"
	$(PYDA) -m pip install --quiet --find-links $(TORCH_WHEELS) wheel "torch==$(DA_TORCH)" $(DA_PINS)
	@$(MAKE) --no-print-directory mmcv-wheel WHEEL_PY=$(PYDA) WHEEL_PACKAGE=mmcv-full WHEEL_VERSION=$(DA_MMCV_FULL)
	$(PYDA) -m pip install --quiet --no-deps "$$(cat $(VENV_DA)/.mmcv-wheel)" "mmsegmentation==$(DA_MMSEG)"
	$(PYDA) -m pip install --quiet -e .
	$(PYDA) -c "import sys, torch, mmcv.ops, mmcv.runner, mmseg.models, rewardpatch; print('DAFormer stack ready: Python', sys.version.split()[0], 'torch', torch.__version__, 'mmcv-full', mmcv.__version__, 'with ops, mmseg', mmseg.__version__)"
	@touch $@

# One venv per Python of PYTHONS. pip's cache (outside the repository) makes a rerun take seconds;
# build/ goes first, as setuptools would put its stale files into the wheel. A Python this
# machine lacks gets no venv: its tests skip, or fail in CI.
$(STAMP_PYTHONS): Makefile setup.cfg pyproject.toml $(PACKAGE_FILES)
	@echo "setup-pythons: a venv with rewardpatch for each of Python $(PYTHONS)"
	@for version in $(PYTHONS); do \
		python=$$(ls -d $(PYENV_ROOT)/versions/$$version.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
		test -n "$$python" || python=$$(command -v python$$version) || true; \
		if [ -z "$$python" ] || ! "$$python" -c "" 2>/dev/null; then \
			echo "no Python $$version here: $(VENV_PYTHONS)/$$version not made"; continue; fi; \
		venv=$(VENV_PYTHONS)/$$version; \
		test -x $$venv/bin/python || "$$python" -m venv $$venv || exit 1; \
		rm -rf build && $$venv/bin/python -m pip install --quiet . || exit 1; \
		echo "$$venv: $$($$venv/bin/python --version), $$($$venv/bin/rewardpatch --version)"; \
	done
	@rm -rf build
	@touch $@

# The matrix's torch 1.7.1 row is DAFormer's stack (Python 3.8, torch 1.7.1): a link to it.
$(VENV_TORCH)/3.8-1.7.1/.rewardpatch-setup: $(STAMPDA)
	@mkdir -p $(VENV_TORCH) && rm -rf $(VENV_TORCH)/3.8-1.7.1 && ln -s $(abspath $(VENV_DA)) $(VENV_TORCH)/3.8-1.7.1
	@echo "$(VENV_TORCH)/3.8-1.7.1: DAFormer's stack, $(VENV_DA)"

# One venv of the matrix, named <python>-<torch>: the interpreter from pyenv (or pythonX.Y on
# PATH), the wheels downloaded once into $(TORCH_WHEELS), then installed from there alone.
$(VENV_TORCH)/%/.rewardpatch-setup:
	@version=$(word 1,$(subst -, ,$*)); torch=$(word 2,$(subst -, ,$*)); numpy=$(NUMPY_$(word 1,$(subst -, ,$*))); \
	python=$$(ls $(PYENV_ROOT)/versions/$$version.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
	python=$${python:-$$(command -v python$$version)}; \
	if [ -z "$$python" ]; then echo "no Python $$version for $(VENV_TORCH)/$*: install it (pyenv install $$version)" >&2; exit 1; fi; \
	if [ -z "$$numpy" ]; then echo "no numpy pinned for Python $$version: add NUMPY_$$version to the Makefile" >&2; exit 1; fi; \
	echo "$(VENV_TORCH)/$*: Python $$version ($$python), torch $$torch, numpy $$numpy"; \
	rm -rf $(VENV_TORCH)/$* && $$python -m venv $(VENV_TORCH)/$* && \
	$(VENV_TORCH)/$*/bin/python -m pip download --quiet --no-cache-dir --only-binary=:all: -d $(TORCH_WHEELS) \
		"torch==$$torch" "numpy==$$numpy" && \
	$(VENV_TORCH)/$*/bin/python -m pip install --quiet --no-index --find-links $(TORCH_WHEELS) \
		"torch==$$torch" "numpy==$$numpy" && \
	$(VENV_TORCH)/$*/bin/python -c "import sys, torch, numpy; print('ready: Python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__)" && \
	touch $@

# mmcv ships no wheel with compiled ops for this torch: build one once (mmcv 2.1.0: 6.7 min on
# 2 cores, mmcv-full 1.7.2: 5.9 min; benchmarks/results/ci_cold.json) and keep it outside the repository, keyed by
# package, version, torch and Python. Called with WHEEL_PY, WHEEL_PACKAGE and WHEEL_VERSION;
# writes the wheel's path to <venv>/.mmcv-wheel.
.PHONY: mmcv-wheel
mmcv-wheel:
	@key=$$($(WHEEL_PY) -c "import sys, torch; print(f'$(WHEEL_PACKAGE)-$(WHEEL_VERSION)-torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}')"); \
	dir="$(CACHE)/wheels/$$key"; \
	name=$$(echo "$(WHEEL_PACKAGE)" | tr - _); \
	wheel=$$(ls "$$dir"/$$name-$(WHEEL_VERSION)-*.whl 2>/dev/null | head -n 1); \
	if [ -z "$$wheel" ]; then \
		echo "building $(WHEEL_PACKAGE) $(WHEEL_VERSION) with ops for $$key (once; cached in $$dir)"; \
		tmp=$$(mktemp -d) && \
		MMCV_WITH_OPS=1 MAX_JOBS=$(JOBS) $(WHEEL_PY) -m pip wheel --quiet --no-deps --no-build-isolation \
			"$(WHEEL_PACKAGE)==$(WHEEL_VERSION)" -w "$$tmp" && \
		mkdir -p "$$dir" && mv "$$tmp"/$$name-*.whl "$$dir"/ && rm -rf "$$tmp" || exit 1; \
		wheel=$$(ls "$$dir"/$$name-$(WHEEL_VERSION)-*.whl | head -n 1); \
	else echo "using cached $$wheel"; fi; \
	echo "$$wheel" > $$(dirname $$(dirname $(WHEEL_PY)))/.mmcv-wheel

demo: $(STAMP) $(DEMO_STAMP)
	$(PY) -m rewardpatch.checkout $(MMSEG_VERSION) $(DEMO_TREE)
	$(DEMO_VENV)/bin/rewardpatch list-heads $(DEMO_TREE)
	$(DEMO_VENV)/bin/rewardpatch apply $(DEMO_TREE)
	$(DEMO_VENV)/bin/rewardpatch check $(DEMO_TREE)
	$(DEMO_VENV)/bin/rewardpatch verify $(DEMO_TREE)

# The project's own checks, before any stack is built (CI runs them first): ruff (pyproject.toml)
# and mypy (setup.cfg) over rewardpatch/, tests/ and benchmarks/, pinned, in a venv of their own
# with the tool and what the type checker reads of the tests (pytest, numpy); the MMSeg stack is
# not needed (its imports are Any to mypy).
VENV_LINT ?= .venv-lint
LINT_TOOLS := ruff==0.17.6 mypy==2.4.1 pytest numpy
STAMP_LINT := $(VENV_LINT)/.rewardpatch-setup

$(STAMP_LINT): setup.cfg
	@test -x $(VENV_LINT)/bin/python || $(PYTHON) -m venv $(VENV_LINT)
	$(VENV_LINT)/bin/python -m pip install --quiet $(LINT_TOOLS) -e .
	@touch $@

lint: $(STAMP_LINT)
	$(VENV_LINT)/bin/ruff check rewardpatch tests benchmarks
	$(VENV_LINT)/bin/mypy

# The 0.x tests run the 0.x stack's interpreter, named by REWARDPATCH_MMSEG0_PYTHON; the
# tests of the other Pythons the venvs of setup-pythons, in REWARDPATCH_PYTHONS; the torch
# matrix's venvs are in the folder REWARDPATCH_TORCH_MATRIX names; the DAFormer stack's
# interpreter is REWARDPATCH_DAFORMER_PYTHON.
test: $(STAMP) $(STAMP0) $(STAMP_PYTHONS) $(TORCH_STAMPS) $(STAMPDA)
	REWARDPATCH_MMSEG0_PYTHON=$(abspath $(PY0)) REWARDPATCH_PYTHONS=$(abspath $(VENV_PYTHONS)) \
		REWARDPATCH_TORCH_MATRIX=$(abspath $(VENV_TORCH)) REWARDPATCH_DAFORMER_PYTHON=$(abspath $(PYDA)) \
		$(PY) -m pytest $(PYTEST_ARGS)

# The fast loop: every test not marked `stack` (tests/conftest.py marks those that need one).
$(STAMP_FAST): Makefile setup.cfg
	@test -x $(VENV_FAST)/bin/python || $(PYTHON) -m venv $(VENV_FAST)
	$(VENV_FAST)/bin/python -m pip install --quiet -e ".[test]"
	@touch $@

test-fast: $(STAMP_FAST)
	$(VENV_FAST)/bin/python -m pytest -m "not stack" $(PYTEST_ARGS)

# Timing lives here, not in the tests. Each writes benchmarks/results/*.json (machine, date).
bench: $(STAMP) $(STAMP0)
	$(PY) benchmarks/bench_patch.py
	$(PY) benchmarks/bench_hostile.py
	$(PY) benchmarks/bench_reward.py
	$(PY) benchmarks/bench_amp.py
	$(PY) benchmarks/bench_verify.py
	$(PY) benchmarks/bench_verify.py --mmseg 0.30.0 --python $(PY0)
	$(PY) benchmarks/bench_stats.py
	$(PY) benchmarks/bench_ddp_teardown.py

# About an hour of CPU (55 min on 2 cores): reward fine-tuning against CE continued and
# Lovasz on all five tasks (three single-domain, two domain adaptation), 3 seeds.
bench-learning: $(STAMP)
	$(PY) benchmarks/bench_learning.py

clean:
	rm -rf $(VENV) $(VENV0) $(VENV_DA) $(VENV_PYTHONS) $(VENV_TORCH) $(VENV_LINT) $(VENV_FAST) build *.egg-info \
		.pytest_cache .hypothesis
