"""The speed benchmark's CPU smoke run: every column and the end-to-end epoch come out.

Speeds themselves are never asserted; this only checks that the benchmark runs
and reports what it says it does.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_quick_run_reports_both_paths_and_the_end_to_end_epoch(tmp_path):
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/throughput.py"), "--quick", "--end-to-end", "--backward-memory", "min",
           "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())

    rows = {(r["path"], r["precision"]): r for r in report["results"]}
    assert set(rows) == {(path, prec) for path in ("reference", "fast") for prec in ("fp32", "bf16")}
    for row in rows.values():
        assert row["train_images_per_s"] > 0 and row["eval_images_per_s"] > 0
    # the fast path runs with backward_memory min, the reference with full tensors
    assert rows["fast", "fp32"]["train_saved_mib"] < 0.5 * rows["reference", "fp32"]["train_saved_mib"]
    assert all(check["spikes_equal"] for check in report["neuron_check"])

    e2e = report["end_to_end"]
    # the quick sizes: whole batches of 32 out of at most 256 generated images, all 128 test images
    assert 0 < e2e["train_images"] <= 256 and e2e["train_images"] % 32 == 0 and e2e["eval_images"] == 128
    assert e2e["amp"] == "bf16" and e2e["compile"] == "off"  # CPU: compile auto is off
    assert e2e["train_images_per_s"] > 0 and e2e["eval_images_per_s"] > 0
    assert "end to end: 256 training images" in done.stdout


def test_throughput_measures_the_models_of_other_configs(tmp_path):
    """What the GPU session measures for the DVS (T = 10, 16) and ImageNet 8-384 configs, at toy sizes."""
    out = tmp_path / "configs.json"
    configs = [str(ROOT / c) for c in ("conf/cifar10-dvs/2_256_200E_t10_TET.yml", "conf/imagenet/8_384_300E_t4.yml")]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/throughput.py"), "--quick", "--precisions", "fp32",
                           "--config", *configs, "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["config"] for r in rows] == ["2_256_200E_t10_TET.yml", "8_384_300E_t4.yml"]
    assert all(r["train_images_per_s"] > 0 for r in rows)


def test_inference_speed_quick_run_times_every_neuron_on_the_loop(tmp_path):
    out = tmp_path / "inference.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/inference_speed.py"), "--quick", "--neurons", "lif",
                           "if_soft", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["neuron"], r["path"], r["batch"]) for r in rows} == {
        (n, p, b) for n in ("lif", "if_soft") for p in ("fused", "loop") for b in (1, 64)}
    assert all(r["images_per_s"] > 0 for r in rows if r["path"] == "loop")
    assert all(not r["available"] for r in rows if r["path"] == "fused")  # no CUDA in the tests
    assert "published: 1323.4 images/s" in done.stdout


def test_step_overhead_counts_what_a_training_step_dispatches_outside_the_model(tmp_path):
    """Operator counts, not times: the fused optimizer step and the loop's loss window keep a step's host work
    outside the model small (each operator is a kernel launch on a GPU)."""
    out = tmp_path / "step.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/step_overhead.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    unfused, fused, no_mixup = json.loads(out.read_text())["rows"]
    assert (unfused["optimizer"], fused["optimizer"], no_mixup["mixup"]) == ("adamw foreach", "adamw fused", False)
    assert unfused["ops_per_step"]["forward"] == fused["ops_per_step"]["forward"] > 0
    assert fused["ops_per_step"]["optimizer"] * 5 < unfused["ops_per_step"]["optimizer"]
    assert no_mixup["ops_per_step"]["mixup"] == 0 < fused["ops_per_step"]["mixup"]
    # the loop's own bookkeeping: a copy into the loss window per step, and the sync point's few every 10 steps
    assert fused["ops_per_step"]["loop"] <= 8
    assert "outside model" in done.stdout


def test_ddp_scaling_trains_one_run_with_two_gloo_processes_and_reports_its_images_per_second(tmp_path):
    out = tmp_path / "ddp.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/ddp_scaling.py"), "--procs", "1", "2", "--epochs", "1",
                           "--json", str(out), "--", "--embed-dim", "16", "--num-heads", "2", "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = json.loads(out.read_text())
    assert (one["procs"], two["procs"]) == (1, 2) and one["images_per_s"] > 0 and two["images_per_s"] > 0
    assert "| 2 |" in done.stdout and "x |" in done.stdout


def test_eval_recording_compares_the_eager_and_the_compiled_evaluation_with_the_recorder_on(tmp_path):
    out = tmp_path / "eval.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/eval_recording.py"), "--quick", "--backend", "aot_eager",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert rows["eager"]["mean_firing_rate"] > 0 and rows["compiled"]["mean_firing_rate"] == rows["eager"]["mean_firing_rate"]
    assert rows["compiled"]["top1"] == rows["eager"]["top1"] and "compiled / eager" in done.stdout
