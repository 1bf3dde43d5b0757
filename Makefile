# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test browser bench reproduce profiles one-gpu-profiles gpu-check gpu-bundle clean

# One joint install: nvidia-pytriton pins numpy<2, and resolving everything at once keeps it so.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[triton,emulate,loadtest,plan,pandas,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmesim simulate --profile resnet50-pytorch-t4 --instance ml.g4dn.2xlarge --copies auto --out out/demo

# The suite waits on real servers far more than it computes: three workers keep 2 cores busy,
# a module per worker so that module fixtures start once. Tests marked `alone` time real
# processes against a prediction, which a busy machine would falsify: they run afterwards.
test: $(STAMP) browser
	$(PY) -m pytest -q -n 3 --dist loadfile -m "not alone"
	$(PY) -m pytest -q -m alone

# The HTML report test opens pages in a real headless browser: Debian's chromium, installed when missing.
browser:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

reproduce: $(STAMP)
	$(PY) examples/reproduce_blog.py

profiles: $(STAMP)
	$(PY) -m mmesim.derive.blog --write

one-gpu-profiles: $(STAMP)
	$(PY) -m mmesim.derive.leave_one_out --write

bench: $(STAMP)
	$(PY) benchmarks/sim_speed.py
	$(PY) benchmarks/output_writing.py

# On an NVIDIA host: NVML, then resnet50 and bert-base-uncased calibrated on cuda:0 in every
# framework served there; report and profiles in out/gpu-check/ (calibration/README.md).
GPU_CHECK_DEVICE ?= cuda:0
gpu-check: $(STAMP)
	$(PY) -m mmesim.calibrate.gpu_check --device $(GPU_CHECK_DEVICE) --out out/gpu-check

# What a GPU host with no internet needs to run gpu-check (its Python's version; calibration/README.md)
GPU_BUNDLE_PYTHON ?= 3.12
gpu-bundle: $(STAMP)
	PY=$(PY) calibration/device_bundle.sh $(GPU_BUNDLE_PYTHON) out/gpu-bundle

clean:
	rm -rf $(VENV) out .pytest_cache
