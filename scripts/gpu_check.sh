#!/usr/bin/env bash
# The GPU box's check, one command, at most 8 minutes, non-zero on any failure:
#   scripts/gpu_check.sh [--cpu] [DATA]        (DATA: the shared photos, default ../shared/data)
#   docker run --gpus all -v /path/to/shared/data:/check-data forecourt scripts/gpu_check.sh /check-data
# 1. the GPU, driver, CUDA, cuDNN and onnxruntime's providers, and where each model runs (CUDA required);
# 2. IS-Net's masks on the GPU (fp16) and the CPU agree: mean Dice >= 0.999 on the shared photos; EfficientNet-Lite0
#    (type=auto, recognition's car embedding) on the GPU gives the CPU's type=auto decision on each photo and a car
#    embedding of cosine >= 0.999 to the CPU's, and the car embedding's time per photo on the GPU and the CPU;
# 3. scripts/bench_removebg.py on full-size Carvana photos at concurrency 1, 8 and 32 (type=auto; type=car at 32,
#    at 8 with --cpu):
#    images/s, p50/p95 latency, the per-stage split, the workers' peak RSS; the sessions run with onnxruntime's
#    memory pattern off on CUDA too (models/segmenters/isnet.py MEM_PATTERN): this is the step that sees its speed
#    and memory on a GPU;
# 4. SAM vit_b's encoder timing when a checkpoint is installed;
# 5. the figures against issue 14's targets (README, "GPU").
# --cpu runs the same steps on the CPU (2 photos, 4 requests a level: a dry run of the levels, not a measurement of
# them), so the check is known to work before a GPU box runs it; the GPU targets are then printed as "n/a here".
set -euo pipefail
cd "$(dirname "$0")/.."

CPU=""
DATA=""
for arg in "$@"; do
  case "$arg" in
    --cpu) CPU="--cpu" ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) DATA="$arg" ;;
  esac
done
DATA=${DATA:-../shared/data}
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python}; fi
export FORECOURT_MODELS__DIR=${FORECOURT_MODELS__DIR:-$(pwd)/var/models}
[ -d "$DATA/carvana/images" ] || { echo "FAIL: no Carvana photos under $DATA (pass the shared data folder)"; exit 1; }

START=$(date +%s)
BUDGET=${GPU_CHECK_SECONDS:-480}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() {  # step NAME COMMAND...: run with what is left of the budget; stop the check on a failure
  local name=$1; shift
  local budget; budget=$(left)
  echo
  echo "== $name ($(( $(date +%s) - START )) s in)"
  if [ "$budget" -le 0 ]; then echo "FAIL: out of time before $name"; exit 1; fi
  if ! timeout --kill-after=10 "$budget" "$@"; then echo "FAIL: $name"; exit 1; fi
}

TMP=$(mktemp -d /tmp/gpu-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [ -n "$CPU" ]; then  # 2 requests in flight per worker: more would only queue for the 2 cores (and memory)
  DEVICE=cpu; PHOTOS=2; REQUESTS=4; WORKERS=2; THREADS=1; SERVER_THREADS=2; CAR_CLIENTS=8; EXACT=--exact
else  # one worker per GPU; its request threads decode and encode while the micro-batcher feeds the GPU
  DEVICE=cuda; PHOTOS=24; REQUESTS=64; WORKERS=${GPU_CHECK_WORKERS:-1}; THREADS=0; SERVER_THREADS=32; CAR_CLIENTS=32
  EXACT=""
fi

step "devices" "$PY" scripts/gpu_check.py info $CPU
step "GPU vs CPU masks" "$PY" scripts/gpu_check.py dice "$DATA" $CPU --photos "$PHOTOS"
step "GPU vs CPU EfficientNet-Lite0 (type=auto, car embedding)" "$PY" scripts/gpu_check.py lite0 "$DATA" $CPU \
  --photos "$PHOTOS"
step "bench type=auto at concurrency 1, 8, 32" "$PY" scripts/bench_removebg.py "$DATA" --device "$DEVICE" \
  --clients 1 8 32 --requests "$REQUESTS" --workers "$WORKERS" --threads "$THREADS" --server-threads "$SERVER_THREADS" \
  $EXACT --no-rembg --json "$TMP/auto.json"
step "bench type=car at concurrency $CAR_CLIENTS" "$PY" scripts/bench_removebg.py "$DATA" --device "$DEVICE" --type car \
  --clients "$CAR_CLIENTS" --requests "$REQUESTS" --workers "$WORKERS" --threads "$THREADS" \
  --server-threads "$SERVER_THREADS" $EXACT --no-rembg --json "$TMP/car.json"
step "SAM vit_b encoder" "$PY" scripts/gpu_check.py sam $CPU
step "targets" "$PY" scripts/gpu_check.py targets "$TMP/auto.json" "$TMP/car.json" $CPU
echo
echo "gpu_check: all steps passed in $(( $(date +%s) - START )) s"
