#!/usr/bin/env bash
# Check a CUDA machine in one command:
#
#     bash tool/gpu_check.sh [OUT_DIR]        (default OUT_DIR: output/gpu_check/<date>_<time>)
#
# 1. gpu tests    python -m pytest -m gpu: float16 autocast of the model and SMPL on CUDA, AMP
#                 training steps with the original's fixed loss scale and with amp_dynamic_scale,
#                 torchrun/NCCL training (--amp; sync_bn with two or more GPUs) and evaluation
#                 on min(2, #GPUs) processes;
# 2. throughput   tool/gpu_throughput.py --batch $BATCH (default 128) --dtypes fp32,fp16,bf16:
#                 training step and evaluation forward, samples/s and peak memory per dtype.
#
# Each step's output is shown and kept in OUT_DIR/<step>.log (throughput also as JSON).  The
# script ends with one summary table and exits 1 if any step failed, or at once if there is no
# CUDA device.  PYTHON chooses the interpreter (default: python).
set -u
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python}
BATCH=${BATCH:-128}

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "ERROR: no CUDA device (torch.cuda.is_available() is False): tool/gpu_check.sh checks a GPU machine." >&2
    exit 1
fi
OUT=${1:-output/gpu_check/$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT" || exit 1

STEPS=()
RESULTS=()
run_step() {   # run_step NAME COMMAND...: run, show and log the command; record PASS/FAIL and time
    local name=$1 start=$SECONDS rc
    shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$OUT/${name// /_}.log"
    rc=${PIPESTATUS[0]}
    STEPS+=("$name")
    if [ "$rc" -eq 0 ]; then RESULTS+=("PASS $((SECONDS - start)) s"); else RESULTS+=("FAIL (exit $rc) $((SECONDS - start)) s"); fi
}
run_step "gpu tests" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider
run_step "throughput" "$PYTHON" tool/gpu_throughput.py --batch "$BATCH" --dtypes fp32,fp16,bf16 --device cuda \
    --out "$OUT/throughput.json"

echo
echo "=== summary ($("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "| torch", torch.__version__)'))"
failed=0
for i in "${!STEPS[@]}"; do
    printf '%-14s %s\n' "${STEPS[$i]}" "${RESULTS[$i]}"
    case ${RESULTS[$i]} in FAIL*) failed=1 ;; esac
done
if [ -f "$OUT/throughput.json" ]; then
    "$PYTHON" - "$OUT/throughput.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"\nbatch {report['batch']} on {report['device']}")
print(f"{'step':<7}{'dtype':<6}{'samples/s':>11}{'peak MB':>10}{'skipped steps':>15}")
for step in ('train', 'test'):
    for dtype, row in report[step].items():
        if row['status'] == 'ok':
            peak = '-' if row['peak_memory_mb'] is None else f"{row['peak_memory_mb']:.0f}"
            print(f"{step:<7}{dtype:<6}{row['samples_per_s']:>11.1f}{peak:>10}{row.get('skipped_steps', '-'):>15}")
        else:
            print(f"{step:<7}{dtype:<6}  {row['status']}: {row['reason']}")
EOF
fi
echo "logs: $OUT"
exit $failed
