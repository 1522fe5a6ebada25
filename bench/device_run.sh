#!/usr/bin/env bash
# Runs bench/gpu_sweep.sh (bench/RESULTS.md, item 7) on a GPU machine and writes what comes back into $OUT.
# The machine has no network and receives at most 64 MiB per call: .gpu/ is built by bench/gpu_bundle.sh.
# Run from the repository root there: bash bench/device_run.sh
set -uo pipefail
: "${OUT:?OUT must name the folder whose files come back}"
export PYTHONUNBUFFERED=1
mkdir -p /tmp/site
tar -xJf .gpu/ray-slim.tar.xz -C /tmp/site || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD
python3 bench/device_bundle.py unpack .gpu/nuclei.tar /tmp/nuclei || exit 1
bash bench/gpu_sweep.sh /tmp/nuclei /tmp/gpu-results 2>&1 | tee "$OUT/gpu_sweep.log"
# The leaderboards, the GPU samples of each part and every trial's reports (no checkpoints) come back.
tar -czf "$OUT/results.tgz" -C /tmp/gpu-results --exclude='checkpoint_*' --exclude=cache --exclude=overlays . 2>/dev/null
ls -la "$OUT"
