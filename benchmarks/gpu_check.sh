#!/usr/bin/env bash
# The GPU check, ready to run as is on a CUDA machine (about 5-8 minutes on one GPU):
#   1. the GPU-marked tests (CUDA timing, memory, quantized generation, profiling),
#   2. the scorer benchmark on CUDA (Scorer vs a per-frame loop),
#   3. the protocol benchmark on CUDA (CUDA events, one pipeline call per generation, paired ratios
#      under drift, Ray busy fraction, baseline features reused vs recomputed).
# It stops at once, loudly, where torch sees no CUDA device. Each step has its own time limit,
# and the script fails when any step fails.
#
#   benchmarks/gpu_check.sh            # uses .venv/bin/python if present, else python3
#   PYTHON=/path/to/python benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: FAILED: $PY cannot import torch; set PYTHON to the project's interpreter (make creates .venv)." >&2
  exit 1
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: FAILED: no CUDA device (torch.cuda.is_available() is False for $PY)." >&2
  echo "gpu_check: this check only means something on a CUDA machine; nothing was run." >&2
  exit 1
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu_check: {torch.cuda.device_count()} CUDA device(s), {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'

failed=()
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo; echo "== gpu_check: $name (limit ${limit}s)"
  local t0=$SECONDS
  if timeout "$limit" "$@"; then
    echo "== gpu_check: $name: ok ($((SECONDS - t0))s)"
  else
    echo "== gpu_check: $name: FAILED (exit $?, $((SECONDS - t0))s)" >&2
    failed+=("$name")
  fi
}

step "GPU-marked tests" 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
step "scorer benchmark (CUDA)" 100 "$PY" benchmarks/bench_metrics.py --device cuda --videos 2 --frames 81 \
  --height 480 --width 832 --repeat 2 --no-child-loop
step "protocol benchmark (CUDA events)" 200 "$PY" benchmarks/bench_protocol.py --device cuda --height 64 \
  --steps 10 --threads 4 --rounds 3 --score-frames 81 --score-size 256

echo
if (( ${#failed[@]} )); then
  echo "gpu_check: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: all steps passed"
