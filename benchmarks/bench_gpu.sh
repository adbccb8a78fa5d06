#!/usr/bin/env bash
# `make bench-gpu`: install from requirements.lock what this machine's Python lacks of what the GPU
# check imports (offline from .whl/ when `make gpu-wheels` filled it), then measure.
# Arguments go to benchmarks/bench_gpu.py (e.g. --budget-s 300, --output x.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SITE=${BENCH_GPU_SITE:-/tmp/bench-gpu-site}
missing=$("$PYTHON" benchmarks/gpu_pins.py --missing)
if [ -n "$missing" ]; then
  echo "bench-gpu: installing from requirements.lock into $SITE: $(echo $missing)"
  if compgen -G ".whl/*.whl" >/dev/null; then
    source=(--no-index --find-links .whl)
  else
    source=()
  fi
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${source[@]}" $missing
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/bench_gpu.py "$@"
