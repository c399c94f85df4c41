#!/usr/bin/env bash
# The GPU checks, as one prepared run on an offline node (one H100 or H200) whose image
# holds PyTorch and transformers; pit's other dependencies come from the archive that
# benchmarks/offline_site.py packs (.gpu-site/site.tar.xz, about 43 MiB).
#
#   bash benchmarks/gpu_session.sh mfu       # tokens/s and MFU of a 1.2B Llama
#   bash benchmarks/gpu_session.sh compare   # the demo's comparison on the gpu preset
#   bash benchmarks/gpu_session.sh all       # both
#   bash benchmarks/gpu_session.sh compare --set model.num_layers=2   # more --set for compare
#
# Output, also written under $OUT (default gpu-out/): the environment, each check's
# full log, the comparison's results JSON and figures, and its MLflow store. Each part
# has its own time limit (MFU_TIMEOUT, COMPARE_TIMEOUT seconds), so one that overruns
# leaves the other its time and its log up to where it stopped.
set -uo pipefail
what=${1:-all}
shift || true
case "$what" in mfu|compare|all) ;; *) echo "usage: $0 mfu|compare|all" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"

if [ -f .gpu-site/site.tar.xz ]; then
    mkdir -p /tmp/pit-site && tar xJf .gpu-site/site.tar.xz -C /tmp/pit-site || exit 1
    export PYTHONPATH=/tmp/pit-site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 PIT_PROGRESS=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    $PY -c 'import sys, torch, transformers, pit.config
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
} 2>&1 | tee "$OUT/env.txt"

rc=0
if [ "$what" != compare ]; then
    timeout "${MFU_TIMEOUT:-300}" $PY benchmarks/gpu_mfu.py 2>&1 | tee "$OUT/mfu.txt"
    rc=$((rc | PIPESTATUS[0]))
fi
if [ "$what" != mfu ]; then
    timeout "${COMPARE_TIMEOUT:-420}" $PY -m pit.cli compare --preset gpu \
        --results "$OUT/gpu.json" --set workdir=/tmp/pit-runs "$@" 2>&1 | tee "$OUT/compare.txt"
    rc=$((rc | PIPESTATUS[0]))
    # Every finished stage and recipe is in MLflow's store, also when the time limit
    # stopped the comparison before its table: `mlflow ui --backend-store-uri sqlite:///...`.
    [ -f /tmp/pit-runs/mlflow.db ] && cp /tmp/pit-runs/mlflow.db "$OUT/"
fi
exit "$rc"
