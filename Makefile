# rewardpatch: `make demo` patches and verifies a bundled MMSeg checkout, `make test` runs the tests.
# Both do all set-up first, once: a second run skips what is already installed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RP := $(VENV)/bin/rewardpatch

# The verification stack, pinned. Override TORCH_VERSION / TORCH_INDEX for a CUDA build (README).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
MMCV_VERSION := 2.1.0
MMENGINE_VERSION := 0.10.7
MMSEG_VERSION := 1.2.2
# mmcv 2.1.0's setup.py imports pkg_resources, which setuptools 81 removed; torch needs >= 77.
SETUPTOOLS := setuptools>=77,<81

CACHE ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/rewardpatch
DEMO_TREE ?= mmsegmentation
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS ?=

STAMP := $(VENV)/.rewardpatch-setup

.PHONY: setup demo test bench bench-learning clean
.DEFAULT_GOAL := demo

setup: $(STAMP)

$(STAMP): Makefile setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade wheel "$(SETUPTOOLS)" numpy
	$(PIP) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==$(TORCH_VERSION)"
	@$(MAKE) --no-print-directory mmcv-wheel
	$(PIP) install --quiet "$$(cat $(VENV)/.mmcv-wheel)" "mmengine==$(MMENGINE_VERSION)" \
		"mmsegmentation==$(MMSEG_VERSION)" ftfy regex
	$(PIP) install --quiet --no-build-isolation -e ".[test]"
	$(PY) -c "import mmcv.ops, mmseg, rewardpatch; print('stack ready: mmcv', mmcv.__version__, 'with ops, mmseg', mmseg.__version__)"
	@touch $@

# mmcv ships no wheel with compiled ops for this torch: build it once (about 15 min on 2 cores)
# and keep it outside the repository, keyed by mmcv, torch and Python versions.
.PHONY: mmcv-wheel
mmcv-wheel:
	@key=$$($(PY) -c "import sys, torch; print(f'mmcv-$(MMCV_VERSION)-torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}')"); \
	dir="$(CACHE)/wheels/$$key"; \
	wheel=$$(ls "$$dir"/mmcv-$(MMCV_VERSION)-*.whl 2>/dev/null | head -n 1); \
	if [ -z "$$wheel" ]; then \
		echo "building mmcv $(MMCV_VERSION) with ops for $$key (once; cached in $$dir)"; \
		tmp=$$(mktemp -d) && \
		MMCV_WITH_OPS=1 MAX_JOBS=$(JOBS) $(PIP) wheel --quiet --no-deps --no-build-isolation \
			"mmcv==$(MMCV_VERSION)" -w "$$tmp" && \
		mkdir -p "$$dir" && mv "$$tmp"/mmcv-*.whl "$$dir"/ && rm -rf "$$tmp" || exit 1; \
		wheel=$$(ls "$$dir"/mmcv-$(MMCV_VERSION)-*.whl | head -n 1); \
	else echo "using cached $$wheel"; fi; \
	echo "$$wheel" > $(VENV)/.mmcv-wheel

demo: $(STAMP)
	$(PY) -m rewardpatch.checkout $(MMSEG_VERSION) $(DEMO_TREE)
	$(RP) list-heads $(DEMO_TREE)
	$(RP) apply $(DEMO_TREE)
	$(RP) check $(DEMO_TREE)
	$(RP) verify $(DEMO_TREE)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Timing lives here, not in the tests. Each writes benchmarks/results/*.json (machine, date).
bench: $(STAMP)
	$(PY) benchmarks/bench_patch.py
	$(PY) benchmarks/bench_reward.py
	$(PY) benchmarks/bench_verify.py
	$(PY) benchmarks/bench_stats.py
	$(PY) benchmarks/bench_ddp_teardown.py

# Minutes of CPU: reward fine-tuning against CE continued, 3 seeds.
bench-learning: $(STAMP)
	$(PY) benchmarks/bench_learning.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
