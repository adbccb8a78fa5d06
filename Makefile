# Two commands on a fresh machine: `make run` and `make test` (each sets up what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

# Offline and quiet: no model hub, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false

.PHONY: setup run test test-quick bench bench-gpu gpu-wheels viz viz-build mlflow-ui lock data clean-outputs

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup  ## the default kedro run on the embedded data, offline, CPU
	$(BIN)/kedro run

# Two test processes, one torch thread each; the Ray tests share one of them (xdist_group "ray").
TEST_ARGS ?= -n 2 --dist loadgroup

test: setup  ## the test suite (no network, no GPU)
	$(BIN)/python -m pytest $(TEST_ARGS)

test-quick: setup  ## the tests not marked slow (no `kedro run` subprocess): the inner loop
	$(BIN)/python -m pytest $(TEST_ARGS) -m "not slow"

# One torch thread: on a shared 2-core machine the ratios are then steady (see benchmarks/README.md).
BENCH_ARGS ?= --threads 1 --repeats 2

bench: setup  ## TINT engine, execution engines, predict, NTI reconstruction, reliability, storage, scale, task cost -> data/08_reporting/benchmark*.json
	$(BIN)/python benchmarks/bench_tint.py $(BENCH_ARGS) --output data/08_reporting/benchmark.json
	$(BIN)/python benchmarks/bench_execution.py --repeats 2 --output data/08_reporting/benchmark_execution.json
	$(BIN)/python benchmarks/bench_predict.py --output data/08_reporting/benchmark_predict.json
	$(BIN)/python benchmarks/bench_reconstruction.py --threads 2 --output data/08_reporting/benchmark_reconstruction.json
	$(BIN)/python benchmarks/bench_reliability.py --output data/08_reporting/benchmark_reliability.json
	$(BIN)/python benchmarks/bench_storage.py --output data/08_reporting/benchmark_storage.json
	$(BIN)/python benchmarks/bench_scale.py --episodes 20,100,400 --output data/08_reporting/benchmark_scale.json
	$(BIN)/python benchmarks/bench_task_cost.py --output data/08_reporting/benchmark_task_cost.json

# The prepared GPU check (benchmarks/README.md, "GPU check"): under 8 minutes on one H100 ->
# benchmarks/results/<device>.json. No `setup` first: a GPU machine may have no package index; the
# script installs from requirements.lock only what its Python lacks (offline from .whl/ if there).
BENCH_GPU_ARGS ?= --budget-s 360

bench-gpu:  ## on a GPU: SD 1.5 generation, TINT, teacher, students (random weights) -> benchmarks/results/<device>.json
	bash benchmarks/bench_gpu.sh $(BENCH_GPU_ARGS)

# Here (with a package index), for a GPU machine without one: the lock's wheels of
# benchmarks/gpu-packages.txt into .whl/ (git-ignored), for CPython 3.12 on x86-64 Linux.
GPU_WHEEL_PLATFORMS := $(foreach n,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(n)_x86_64)

gpu-wheels:  ## download the GPU check's missing packages (requirements.lock versions) into .whl/
	@mkdir -p .whl
	$(PYTHON) benchmarks/gpu_pins.py > .whl/requirements-gpu.txt
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp $(GPU_WHEEL_PLATFORMS) -d .whl -r .whl/requirements-gpu.txt
	@du -sh .whl

viz: setup  ## Kedro-Viz on http://127.0.0.1:4141
	$(BIN)/kedro viz run

viz-build: setup  ## static Kedro-Viz site in ./build
	$(BIN)/kedro viz build --include-previews

mlflow-ui: setup  ## MLflow UI on http://127.0.0.1:5000 over the local SQLite store
	@$(BIN)/python -c "import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db'); \
	e = mlflow.get_experiment_by_name('tint_distill'); \
	from tint_distill.run_story import runs_table_url; \
	print(f'Runs table, headline metrics first: {runs_table_url(e.experiment_id, \"http://127.0.0.1:5000/\")}' if e else 'No runs yet: kedro run first.')"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

lock: setup  ## re-pin the whole stack after editing pyproject.toml
	{ head -3 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^tint' ; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

data: setup  ## rebuild data/01_raw/openclipart (needs: apt-get install openclipart-png)
	$(BIN)/python scripts/build_openclipart_subset.py
