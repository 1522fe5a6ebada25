#!/usr/bin/env bash
# GPU protocol (bench/RESULTS.md, item 7) on one GPU machine, in four parts:
#   1. throughput: 4 R50-FPN trials sharing the GPU (bench/gpu_throughput.yaml), with amp off, then amp auto (bf16
#      where the GPU has it): s/iteration, GPU utilisation and memory (nvidia-smi every 0.5 s);
#   2. search: a short version of spaces/maskrcnn.yaml (bench/gpu_short.yaml) under a time budget: trials, GPU-hours,
#      s/iteration per backbone, best val_map50;
#   3. export of the best trial (s per tile, top 100 detections);
#   4. reproducibility: the same trial twice with one seed, once with another (bench/seed_repeat.py).
#
#   bench/gpu_sweep.sh DATA RESULTS
#
# DATA: the course layout (../shared/data/nuclei, or a bundle unpacked by bench/device_bundle.py).
# Env: PYTHON (default python3), BUDGET_S (time budget of part 2, default 150), PARTS (default "1 2 3 4"),
# THROUGHPUT_SPACE / SEARCH_SPACE (default bench/gpu_throughput.yaml / bench/gpu_short.yaml; CPU-sized ones make a
# dry run of the script on a machine without GPU).
set -uo pipefail
DATA=${1:?usage: bench/gpu_sweep.sh DATA RESULTS}
RESULTS=${2:?usage: bench/gpu_sweep.sh DATA RESULTS}
PY=${PYTHON:-python3}
PARTS=${PARTS:-1 2 3 4}
STAMP=$(date +%Y%m%d-%H%M%S)
export PYTHONUNBUFFERED=1 NUCLEITUNE_CACHE=${NUCLEITUNE_CACHE:-$RESULTS/cache}
mkdir -p "$RESULTS"

# Sample the GPU every 0.5 s into $1 while the rest of the command line runs.
with_gpu_log() {
  local log=$1
  shift
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 >"$log" 2>/dev/null &
    local smi=$!
    "$@"
    local rc=$?
    kill "$smi" 2>/dev/null
    wait "$smi" 2>/dev/null
    return $rc
  fi
  "$@"
}

# GPU utilisation while trials held GPU memory (mean, %) and the peak memory (MiB), from a with_gpu_log file.
gpu_figures() {
  "$PY" - "$1" <<'EOF'
import sys
rows = [tuple(float(x) for x in line.split(",")) for line in open(sys.argv[1]) if line.strip()]
if not rows:
    print("gpu: no samples")
    sys.exit()
idle = min(mem for _, mem in rows)
busy = [util for util, mem in rows if mem > idle + 500]  # trials hold GPU memory while they run
print(f"gpu: utilisation {sum(busy) / max(1, len(busy)):.1f} % (mean over {len(busy)} samples while trials ran), "
      f"peak memory {max(mem for _, mem in rows):.0f} MiB")
EOF
}

sweep() {  # name space [flags...]: one sweep (MLflow off: the machine may not carry it), then its figures
  local name=$1 space=$2
  shift 2
  local t0=$(date +%s)
  with_gpu_log "$RESULTS/$name.gpu.csv" "$PY" -m search.run --space "$space" --data "$DATA" --results "$RESULTS" \
    --name "$name" --mlflow-uri off "$@"
  echo "search.run exit code $?"
  "$PY" bench/sweep_report.py "$RESULTS/$name" --wall-s $(($(date +%s) - t0))
  gpu_figures "$RESULTS/$name.gpu.csv"
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch, detectron2, ray, optuna; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(), '| detectron2', detectron2.__version__,
      '| ray', ray.__version__, '| optuna', optuna.__version__)"
nproc

if [[ " $PARTS " == *" 1 "* ]]; then
  for amp in off auto; do
    echo "== 1. throughput: 4 x R50-FPN sharing the GPU, amp $amp"
    space=$RESULTS/throughput-$amp.yaml
    "$PY" -c "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); d['settings']['amp'] = sys.argv[2];
yaml.safe_dump(d, open(sys.argv[3], 'w'))" "${THROUGHPUT_SPACE:-bench/gpu_throughput.yaml}" "$amp" "$space"
    sweep "throughput-$amp-$STAMP" "$space"
  done
fi

NAME=gpu-$STAMP
if [[ " $PARTS " == *" 2 "* ]]; then
  echo "== 2. search (${SEARCH_SPACE:-bench/gpu_short.yaml}, time budget ${BUDGET_S:-150} s)"
  sweep "$NAME" "${SEARCH_SPACE:-bench/gpu_short.yaml}" --time-budget-s "${BUDGET_S:-150}"
fi

if [[ " $PARTS " == *" 3 "* ]]; then
  echo "== 3. export (best trial, test tiles of $DATA)"
  t1=$(date +%s)
  "$PY" -m search.export --best --results "$RESULTS" --name "$NAME" --data "$DATA"
  echo "search.export exit code $?"
  ntest=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$DATA/test_img_ids.json")
  echo "export: $(($(date +%s) - t1)) s for $ntest test tile(s), model loading included"
fi

if [[ " $PARTS " == *" 4 "* ]]; then
  echo "== 4. reproducibility: the same trial twice (bench/seed_repeat.py)"
  "$PY" bench/seed_repeat.py --data "$DATA" --device auto --epochs 6
fi
