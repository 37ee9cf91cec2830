#!/usr/bin/env bash
# Every GPU measurement the speed work needs, in one run of at most about 10 minutes, so a
# session with a lent GPU spends its device time on one call:
#   bash benchmarks/gpu_session.sh            # results and logs under $OUT (default ./gpu_out)
#   QUICK=1 bash benchmarks/gpu_session.sh    # the same commands at toy sizes, to try it on a CPU first
# Each part has its own time limit, so one slow part cannot eat the others' time.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

if [ -n "${QUICK:-}" ]; then
  tp=(--quick) tp64=(--quick) tp256=(--quick) tp256s=(--quick) tpcfg=(--quick)
  e2e=(--quick) step=(--quick)
  limit() { shift; "$@"; }
else
  tp=(--batch-sizes 64 256 --steps 20 --warmup 5)
  tp64=(--batch-sizes 64 --steps 20 --warmup 5)
  tp256=(--batch-sizes 256 --steps 20 --warmup 5)
  tp256s=(--batch-sizes 256 --steps 10 --warmup 3)
  tpcfg=(--batch-sizes 32 --steps 5 --warmup 2)
  e2e=(--batch 256 --amp bf16 --epochs 2)  # workers: auto, as a training run
  inf=(--batch-sizes 1 64 256 --neurons lif if if_soft lif_soft plif)
  step=(--device cuda --batch 64 --steps 10)
  limit() { timeout "$@"; }
fi

part() {  # part NAME SECONDS COMMAND...: run, keep the log, go on whatever happens
  local name=$1 seconds=$2
  shift 2
  echo "=== $name"
  limit "$seconds" "$@" >"$OUT/$name.txt" 2>&1
  echo "exit $? ($name)" >>"$OUT/$name.txt"
  grep -v '^W[0-9]' "$OUT/$name.txt" | tail -n 25
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
# most important first; the limits add up to 576 s, under the device tool's 600 s per call
# the GPU-marked tests (tests/test_cuda.py; skipped on a machine without CUDA, as in CI). pytest is pure
# Python: on a machine without it, `pip install --target .pytest_deps pytest` beside this checkout and carry
# that folder; it is put on the path here.
[ -d "$PWD/.pytest_deps" ] && export PYTHONPATH="$PYTHONPATH:$PWD/.pytest_deps"
part cuda_tests 155 "$PY" -m pytest -q -m gpu tests/test_cuda.py -p no:cacheprovider -rA --tb=short
# inference speed per neuron, fused kernels and per-step loop (the study's speed claim)
part inference 35 "$PY" benchmarks/inference_speed.py "${inf[@]}" --json "$OUT/inference.json"
# eager: reference (per-step, full tensors) vs fast (fused, lean backward), fp32 and bf16
part throughput_eager 75 "$PY" benchmarks/throughput.py "${tp[@]}" --json "$OUT/throughput_eager.json"
part end_to_end 95 "$PY" benchmarks/end_to_end.py "${e2e[@]}" --json "$OUT/end_to_end.json"
# the training command's CUDA default: compile with CUDA graphs
part compiled_fp32 55 "$PY" benchmarks/throughput.py "${tp64[@]}" --precisions fp32 --paths fast --compile \
  --compile-mode reduce-overhead --json "$OUT/compiled_fp32.json"
part compiled_bf16 55 "$PY" benchmarks/throughput.py "${tp256[@]}" --precisions bf16 --paths fast --compile \
  --compile-mode reduce-overhead --json "$OUT/compiled_bf16.json"
# what the backward-memory modes cost in time and save in peak memory (default: lean)
part throughput_full 28 "$PY" benchmarks/throughput.py "${tp256s[@]}" --paths fast --backward-memory full \
  --json "$OUT/throughput_full.json"
part throughput_min 28 "$PY" benchmarks/throughput.py "${tp256s[@]}" --paths fast --backward-memory min \
  --json "$OUT/throughput_min.json"
# the DVS (T = 10, 16) and ImageNet 8-384 models at their own configs' batch sizes
part configs 30 "$PY" benchmarks/throughput.py "${tpcfg[@]}" --precisions bf16 --config conf/cifar10-dvs/2_256_200E_t10_TET.yml \
  conf/gesture/2_256_200E_t16.yml conf/imagenet/8_384_300E_t4.yml --json "$OUT/configs.json"
# what one eager training step dispatches outside the model (optimizer, mixup, loss, the loop's bookkeeping)
part step_overhead 20 "$PY" benchmarks/step_overhead.py "${step[@]}" --json "$OUT/step_overhead.json"
echo "results in $OUT"
