# viewrt: every target does its own set-up (a .venv with torch pinned to a CPU build).
# Override: make test PY=python3.12 TORCH_SPEC="torch==2.13.0" TORCH_INDEX=... VENV=.venv

PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# PyTorch's CPU wheel index: on Linux x86-64 the plain spec resolves to the CUDA build (several GB of
# cuda/cudnn/nccl/triton wheels). Empty it (TORCH_INDEX=) to use pip's own configuration.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.viewrt-installed

DEMO_PRESET ?= demo
PRESET ?= small
PRECISION ?= fp32
MAX_VIEWS ?= 16
CHECKPOINT ?=
ENGINE_DIR ?= out/engines/$(PRESET)-$(PRECISION)
TRT ?=
BENCH_ARGS ?=

TRAIN_OUT ?= out/train/demo
TRAIN_ARGS ?=

.PHONY: setup demo train eval-demo test test-all engines bench gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "[setup] creating $(VENV) and installing viewrt[dev,serve,studio] ($(TORCH_SPEC))"
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ] && [ "$$(uname -sm)" = "Linux x86_64" ] && \
	    $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(TORCH_INDEX)/torch/', timeout=10)" 2>/dev/null; then \
		echo "[setup] $(TORCH_SPEC), CPU build, from $(TORCH_INDEX)"; \
		$(BIN)/python -m pip install -q "$(TORCH_SPEC)" --index-url "$(TORCH_INDEX)"; \
	else \
		echo "[setup] $(TORCH_INDEX) not used (unreachable, or not Linux x86-64): $(TORCH_SPEC) from pip's configured index"; \
		$(BIN)/python -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev,serve,studio]"  # serve: Ray Serve, for tests/serve (~400 MB); studio: viewrt studio
	@touch $@

# The main job on the built-in trained model: export, held-out synthetic scenes (seeds
# 900000.., never used in training) view by view, a report.
demo: $(STAMP)
	$(BIN)/viewrt export --preset $(DEMO_PRESET) --out out/demo/model --max-views 16 --force
	$(BIN)/viewrt scene --out out/demo/scenes --views 8 --size 64 --scenes 4 --seed 900000 --style multiview
	$(BIN)/viewrt infer out/demo/model --list out/demo/scenes/scenes.txt --views 4 --out out/demo/run
	@echo "[demo] report: out/demo/run/summary.json, steps.png (mean over the scenes), <scene>/contact_sheet.png"

# pytest-xdist workers (one test file per worker, --dist loadfile: a file's module fixtures
# and servers stay in one process); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Train the demo model (seed 0) and install its weights as the demo preset's.
train: $(STAMP)
	$(BIN)/viewrt train --out $(TRAIN_OUT) --seed 0 $(TRAIN_ARGS)
	cp $(TRAIN_OUT)/model.safetensors models/weights/demo.safetensors
	@echo "[train] installed models/weights/demo.safetensors; log: $(TRAIN_OUT)/log.json, curves.png"

# PSNR/SSIM of the demo weights by number of input views on 50 held-out scenes.
eval-demo: $(STAMP)
	$(BIN)/viewrt train --eval --out out/eval-demo --eval-scenes 50

# Also the slow tests (res256 export, ...).
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "slow or not slow"

# ONNX graphs + manifest always; TensorRT engines where TensorRT and a GPU are present.
# TRT=1 makes a missing TensorRT an error.
engines: $(STAMP)
	$(BIN)/viewrt export --preset $(PRESET) --precision $(PRECISION) --max-views $(MAX_VIEWS) \
		--out $(ENGINE_DIR) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))
	$(BIN)/viewrt build $(ENGINE_DIR) $(if $(filter 1,$(TRT)),,--if-available)

bench: $(STAMP)
	$(BIN)/viewrt export --preset small --out out/bench/model --max-views 64
	rm -rf out/bench/int8 && $(BIN)/viewrt calib out/bench/model --out out/bench/int8 --precision int8 --kv int8 --synthetic 4
	$(BIN)/viewrt bench out/bench/model --out out/bench/results --quantized-export out/bench/int8 $(BENCH_ARGS)

# Everything that needs TensorRT and a GPU (engines, parity on trt/ort-trt/ort-cuda, bench at
# N=4,16,64) into one folder. Without TensorRT or a GPU: says why and exits 3.
GPU_CHECK_OUT ?= out/gpu-check
gpu-check: $(STAMP)
	$(BIN)/python .ci/gpu_check.py --out $(GPU_CHECK_OUT)

clean:
	rm -rf out .pytest_cache .hypothesis
