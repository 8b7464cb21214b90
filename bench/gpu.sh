#!/usr/bin/env bash
# The GPU benchmarks in one run, prepared for a machine with a CUDA GPU (none is needed to read it;
# without one it says so and exits 2). Prints every figure and keeps the logs under $OUT.
#
#   bash bench/gpu.sh                                  # breathing data at ../shared/data/breathing
#   DATA_DIR=/data/breathing EPOCHS=5 OUT=/tmp/gpu bash bench/gpu.sh
#
# In order (about 10 minutes on one H200-class GPU with EPOCHS=3; each step's wall time printed):
#   1. bench/train.py on CUDA: training and inference samples/s and TFLOP/s of the default configs,
#      eager, then with torch.compile;
#   2. bench/waveform.py on CUDA: cached features vs the waveform path (front end on the GPU);
#   3. the GPU profile on the breathing data: stages 00 and 01, then cnn8 and vgg on seed9 for
#      $EPOCHS epochs on fold 0 (samples/s and OOF scores from 02's summary), and cnn8 again with
#      train.compile: true;
#   4. several processes on one GPU: bench/parallel.py, folds shared out over 1 and $NPROC
#      processes of cnn8 (train.distributed: folds; ranks share the GPU). DDP needs one GPU per
#      process (NCCL refuses two ranks on one device; lib/training/ddp.py says so), so DDP runs
#      too when the machine has $NPROC GPUs or more.
# Environment: PYTHON (default .venv/bin/python, else python3), DATA_DIR, OUT (default
# /tmp/bench_gpu), EPOCHS (default 3), NPROC (default 2); DEVICE=cpu rehearses every step on the
# CPU (slow; its figures are no GPU figures) to check the script before GPU time is spent on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DATA_DIR=${DATA_DIR:-../shared/data/breathing}
OUT=${OUT:-/tmp/bench_gpu}
EPOCHS=${EPOCHS:-3}
NPROC=${NPROC:-2}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$gpus" = 0 ] && [ "$DEVICE" != cpu ]; then
  echo "bench/gpu.sh: no CUDA GPU visible to $PYTHON (torch.cuda.is_available() is False): nothing measured" >&2
  exit 2
fi
if [ ! -f "$DATA_DIR/train.csv" ]; then
  echo "bench/gpu.sh: no $DATA_DIR/train.csv: set DATA_DIR to the breathing data folder" >&2
  exit 2
fi
mkdir -p "$OUT"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"

failed=()
step() {  # step TITLE COMMAND...: run it with its output on screen and in $OUT/<n>.log, then its time;
  local title=$1; shift  # a failed step is reported and the next one runs (GPU time is scarce)
  n=$((${n:-0} + 1))
  echo; echo "=== $n. $title"; echo "\$ $*"
  local t0=$SECONDS rc=0
  "$@" 2>&1 | tee "$OUT/$n.log" || rc=$?
  if [ "$rc" = 0 ]; then echo "=== $n. $title: $((SECONDS - t0)) s"
  else echo "=== $n. $title: FAILED (exit $rc) after $((SECONDS - t0)) s"; failed+=("$n. $title"); fi
}

step "training and inference samples/s, eager" "$PYTHON" bench/train.py --device $DEVICE --steps 30
step "training and inference samples/s, torch.compile" "$PYTHON" bench/train.py --device $DEVICE --steps 30 --compile
step "cached features vs the waveform path" "$PYTHON" bench/waveform.py --device $DEVICE --steps 30

step "00_prepare" "$PYTHON" 00_prepare.py configs/data/breathing.yaml --data-dir "$DATA_DIR" --output-dir "$OUT/run"
step "01_features (seed9)" "$PYTHON" 01_features.py configs/cnn8.yaml configs/vgg.yaml --output-dir "$OUT/run"
for cfg in cnn8 vgg; do
  step "02_train $cfg, $EPOCHS epochs, fold 0" "$PYTHON" 02_train.py "configs/$cfg.yaml" --set "train.epochs=$EPOCHS" \
    --set "train.folds=[0]" --set train.patience=100 --set "train.device=$DEVICE" --output-dir "$OUT/run" --force
done
step "02_train cnn8 with torch.compile, $EPOCHS epochs, fold 0" "$PYTHON" 02_train.py configs/cnn8.yaml \
  --set "train.epochs=$EPOCHS" --set "train.folds=[0]" --set train.patience=100 --set train.compile=true \
  --set "train.device=$DEVICE" --name cnn8_compiled --output-dir "$OUT/run" --force

step "folds over 1 and $NPROC processes on the GPU(s)" "$PYTHON" bench/parallel.py --configs configs/cnn8.yaml \
  --nproc 1 "$NPROC" --epochs "$EPOCHS" --data-dir "$DATA_DIR" --work "$OUT/parallel" \
  $([ "$DEVICE" = cuda ] && [ "$gpus" -ge "$NPROC" ] && echo --ddp)
if [ ${#failed[@]} -gt 0 ]; then
  printf '\nbench/gpu.sh: %d step(s) failed (logs in %s):\n' "${#failed[@]}" "$OUT" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo; echo "bench/gpu.sh: done; logs in $OUT"
