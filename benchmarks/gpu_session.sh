#!/usr/bin/env bash
# Every GPU measurement of the project, in calls of at most about 10 minutes each, so a session with a
# lent GPU spends its device time on one call (two where it has the time):
#   bash benchmarks/gpu_session.sh            # the CUDA tests and the speed table; results and logs under $OUT
#                                             # (default ./gpu_out); the table is printed last
#   SET=extra bash benchmarks/gpu_session.sh  # the other figures: eager reference vs fast path, the backward
#                                             # memory modes, the DVS and ImageNet models
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
  e2e=(--quick --amp none) e2e_best=(--quick) step=(--quick) table=(--quick) ckpt=(--quick)
  # two neurons: on a CPU each one times the same per-step loop (tests/test_benchmarks.py reads these parts)
  inf=(--quick --neurons lif if_soft)
  run=(--quick)
  limit() { shift; "$@"; }
else
  tp=(--batch-sizes 64 256 --steps 20 --warmup 5)
  tp64=(--batch-sizes 64 --steps 20 --warmup 5)
  tp256=(--batch-sizes 256 --steps 20 --warmup 5)
  tp256s=(--batch-sizes 256 --steps 10 --warmup 3)
  tpcfg=(--batch-sizes 32 --steps 5 --warmup 2)
  table=()
  # the study's command as it stands (batch 64, fp32, evaluation at 64), and the best setting; workers: auto
  e2e=(--batch 64 --val-batch 64 --amp none --epochs 2)
  run=(--epochs 2 --timeout 100)  # the command itself, no flags: its log times epoch 1 whole
  e2e_best=(--batch 1024 --amp bf16 --epochs 2)
  inf=(--batch-sizes 1 64 256 --neurons lif if if_soft lif_soft plif)
  step=(--device cuda --batch 64 --steps 10)
  ckpt=(--device cuda --batch 64 --steps 20)
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
if [ "${SET:-table}" = table ]; then
  # most important first; the limits add up to 575 s, under the device tool's 600 s per call.
  # The GPU-marked tests (tests/test_cuda.py; skipped on a machine without CUDA, as in CI). pytest is pure
  # Python: on a machine without it, `pip install --target .pytest_deps pytest` beside this checkout and carry
  # that folder; it is put on the path here.
  [ -d "$PWD/.pytest_deps" ] && export PYTHONPATH="$PYTHONPATH:$PWD/.pytest_deps"
  part cuda_tests 150 "$PY" -m pytest -q -m gpu tests/test_cuda.py -p no:cacheprovider -rA --tb=short
  # the model step with the study command's defaults: batch 64 fp32 (train and eval), peak memory at 256,
  # bf16 at 1024 and 256; each row is saved as soon as it is measured
  part speed_table 170 "$PY" benchmarks/speed_table.py "${table[@]}" --json "$OUT/speed_table.json"
  # the loaders, augmentation and evaluation too: 50,000 + 10,000 generated CIFAR images per epoch; the
  # defaults as a user runs them (the training command in its own process, timed from its log), and the best
  # setting through the command's own setup and loop
  part run_rate 110 "$PY" benchmarks/run_rate.py "${run[@]}" --json "$OUT/run_rate.json"
  part end_to_end_best 90 "$PY" benchmarks/end_to_end.py "${e2e_best[@]}" --json "$OUT/end_to_end_best.json"
  # what one eager training step dispatches outside the model (optimizer, mixup, loss, the loop's bookkeeping)
  part step_overhead 20 "$PY" benchmarks/step_overhead.py "${step[@]}" --json "$OUT/step_overhead.json"
  # inference speed per neuron, fused kernels and per-step loop (the study's speed claim)
  part inference 35 "$PY" benchmarks/inference_speed.py "${inf[@]}" --json "$OUT/inference.json"
  echo "=== the table (from $OUT)"
  "$PY" benchmarks/speed_table.py --report "$OUT" | tee "$OUT/table.md"
elif [ "$SET" = extra ]; then
  # the limits add up to 401 s
  # the defaults' epoch through the command's own setup and loop (no checkpoints or logging), with the loaders
  # alone beside it
  part end_to_end_defaults 100 "$PY" benchmarks/end_to_end.py "${e2e[@]}" --json "$OUT/end_to_end_defaults.json"
  # eager: reference (per-step, full tensors) vs fast (fused, lean backward), fp32 and bf16
  part throughput_eager 75 "$PY" benchmarks/throughput.py "${tp[@]}" --json "$OUT/throughput_eager.json"
  # compile with CUDA graphs on the model and a plain AdamW step, without the training loop around it
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
  # what an epoch's checkpoints cost the loop, written on its thread (before) and on the writer's thread (now)
  part checkpoint_save 30 "$PY" benchmarks/checkpoint_save.py "${ckpt[@]}" --json "$OUT/checkpoint_save.json"
else
  echo "SET is table (the default) or extra, not '$SET'" >&2
  exit 2
fi
echo "results in $OUT"
