#!/usr/bin/env bash
# GPU protocol (issue 7, item 7): a short version of spaces/maskrcnn.yaml on one GPU machine, then the export of the
# best trial, then the figures: trials, GPU-hours, s/iteration per backbone, best val_map50, export s/tile.
#
#   bench/gpu_sweep.sh DATA RESULTS [extra search.run flags...]
#
# DATA: the course layout (../shared/data/nuclei, or a bundle unpacked by bench/device_bundle.py).
# Env: PYTHON (default python3), SPACE (default bench/gpu_short.yaml), BUDGET_S (sweep time budget, default 330).
set -uo pipefail
DATA=${1:?usage: bench/gpu_sweep.sh DATA RESULTS [flags]}
RESULTS=${2:?usage: bench/gpu_sweep.sh DATA RESULTS [flags]}
shift 2
PY=${PYTHON:-python3}
SPACE=${SPACE:-bench/gpu_short.yaml}
NAME=gpu-$(date +%Y%m%d-%H%M%S)
export PYTHONUNBUFFERED=1 NUCLEITUNE_CACHE=${NUCLEITUNE_CACHE:-$RESULTS/cache}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch, detectron2, ray, optuna; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      '| detectron2', detectron2.__version__, '| ray', ray.__version__, '| optuna', optuna.__version__)"
nproc

echo "== sweep ($SPACE, time budget ${BUDGET_S:-300} s)"
t0=$(date +%s)
"$PY" -m search.run --space "$SPACE" --data "$DATA" --results "$RESULTS" --name "$NAME" --mlflow-uri off \
  --time-budget-s "${BUDGET_S:-300}" "$@"
echo "search.run exit code $?"
t1=$(date +%s)

echo "== export (best trial, test tiles of $DATA)"
"$PY" -m search.export --best --results "$RESULTS" --name "$NAME" --data "$DATA"
echo "search.export exit code $?"
t2=$(date +%s)
ntest=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$DATA/test_img_ids.json")

echo "== figures"
"$PY" bench/sweep_report.py "$RESULTS/$NAME" --wall-s $((t1 - t0))
echo "export: $((t2 - t1)) s for $ntest test tile(s), model loading included"
