"""The speed benchmark's CPU smoke run: every column and the end-to-end epoch come out.

Speeds themselves are never asserted; this only checks that the benchmark runs
and reports what it says it does.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_session(tmp_path_factory):
    """``QUICK=1 bash benchmarks/gpu_session.sh`` on the CPU, once for the file: its own test checks that every
    part ran and the table came out, and the speed-table, step-overhead and inference tests check what those
    parts (the same commands the tests would run) wrote: the JSON and each part's log, stdout and stderr."""
    out = tmp_path_factory.mktemp("gpu_session")
    env = {**os.environ, "QUICK": "1", "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_session.sh")], capture_output=True, text=True,
                          timeout=900, env=env)
    return out, done


def session_part(gpu_session, part: str) -> str:
    """The log of one part of the QUICK session (its stdout and stderr), which must have exited 0."""
    out, done = gpu_session
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / f"{part}.txt").read_text()
    assert log.rstrip().endswith(f"exit 0 ({part})"), log[-2000:]
    return log


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


def test_inference_speed_quick_run_times_every_neuron_on_the_loop(gpu_session):
    # the session's QUICK part: benchmarks/inference_speed.py --quick --neurons lif if_soft --json inference.json
    stdout = session_part(gpu_session, "inference")
    rows = json.loads((gpu_session[0] / "inference.json").read_text())["rows"]
    assert {(r["neuron"], r["path"], r["batch"]) for r in rows} == {
        (n, p, b) for n in ("lif", "if_soft") for p in ("fused", "loop") for b in (1, 64)}
    assert all(r["images_per_s"] > 0 for r in rows if r["path"] == "loop")
    assert all(not r["available"] for r in rows if r["path"] == "fused")  # no CUDA in the tests
    assert "published: 1323.4 images/s" in stdout


def test_step_overhead_counts_what_a_training_step_dispatches_outside_the_model(gpu_session):
    """Operator counts, not times: the fused optimizer step and the loop's loss window keep a step's host work
    outside the model small (each operator is a kernel launch on a GPU)."""
    # the session's QUICK part: benchmarks/step_overhead.py --quick --json step_overhead.json
    stdout = session_part(gpu_session, "step_overhead")
    unfused, fused, no_mixup = json.loads((gpu_session[0] / "step_overhead.json").read_text())["rows"]
    assert (unfused["optimizer"], fused["optimizer"], no_mixup["mixup"]) == ("adamw foreach", "adamw fused", False)
    assert unfused["ops_per_step"]["forward"] == fused["ops_per_step"]["forward"] > 0
    assert fused["ops_per_step"]["optimizer"] * 5 < unfused["ops_per_step"]["optimizer"]
    assert no_mixup["ops_per_step"]["mixup"] == 0 < fused["ops_per_step"]["mixup"]
    # the loop's own bookkeeping: a copy into the loss window per step, and the sync point's few every 10 steps
    assert fused["ops_per_step"]["loop"] <= 8
    assert "outside model" in stdout


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


def test_speed_table_measures_the_study_command_with_the_training_defaults(gpu_session):
    """Each row runs the training command's own setup (config, Runtime, optimizer, mixup, the loop), and the
    recorded facts are what the rows were asked to do."""
    # the session's QUICK part: benchmarks/speed_table.py --quick --json speed_table.json
    stdout = session_part(gpu_session, "speed_table")
    report = json.loads((gpu_session[0] / "speed_table.json").read_text())
    defaults, memory, best = report["defaults"], report["memory"], report["best"]
    assert (defaults["batch"], defaults["amp"], memory["batch"], memory["amp"]) == (8, "none", 16, "none")
    assert [(r["batch"], r["amp"]) for r in best] == [(16, "bf16"), (32, "bf16")]
    for row in (defaults, memory, *best):
        # the CPU's defaults, as a run on this machine decides them, and the study command's neuron
        assert (row["compile"], row["fused_optimizer"], row["backward_memory"], row["spike_mode"]) == (
            "off", False, "full", "if_soft")
        assert row["train_images"] == 2 * row["batch"] and row["train_s"] > 0  # --quick: 2 timed steps
        assert row["train_peak_bytes"] is None  # not measured on a CPU
    assert defaults["eval_images"] == 16 and defaults["eval_s"] > 0
    assert "| train, batch 8, fp32, no flags | 1,978 img/s |" in stdout
    assert "| peak memory, batch 16, fp32 | 14.1 GB | - | <= 4.70 GB | not measured |" in stdout


def test_speed_table_report_computes_each_figure_from_the_measurements(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed_table", ROOT / "benchmarks/speed_table.py")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        speed_table = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(speed_table)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    common = dict(compile="reduce-overhead", graphs_compiled=2, first_steps_s=41.5)
    speed = {
        "environment": {"device": "NVIDIA H200", "torch": "2.11.0"},
        # 1,920 images in 0.3 s: 6,400 img/s; evaluation 1,920 in 0.075 s: 25,600 img/s, 4.0x
        "defaults": dict(batch=64, amp="none", train_images=1920, train_s=0.3, eval_images=1920, eval_s=0.075, **common),
        "memory": dict(batch=256, amp="none", train_images=7680, train_s=1.0, train_peak_bytes=4_500_000_000),
        # bf16: 30,720 in 1.2 s (25,600 img/s) beats 7,680 in 0.4 s (19,200 img/s)
        "best": [dict(batch=1024, amp="bf16", train_images=30720, train_s=1.2),
                 dict(batch=256, amp="bf16", train_images=7680, train_s=0.4)],
    }
    # 49,984 + 10,000 images in 6.0 + 2.0 s: 7,498 img/s; 310 epochs of 8 s are 41.3 minutes
    e2e = dict(batch=64, amp="none", train_images=49984, eval_images=10000, train_s=6.0, eval_s=2.0)
    (tmp_path / "speed_table.json").write_text(json.dumps(speed))
    (tmp_path / "end_to_end_defaults.json").write_text(json.dumps(e2e))
    # the command as run: an epoch every 9.0 s (the median of 8, 9 and 10): 59,984 images / 9 s = 6,665 img/s;
    # 310 epochs of 9 s are 46.5 minutes
    run = dict(command="spikedriven train -c conf/cifar10/2_256_300E_t4.yml --spike-mode if_soft", train_images=49984,
               eval_images=10000, epoch_periods_s=[8.0, 10.0, 9.0], train_and_eval_s=8.5, first_epoch_s=95.2)
    (tmp_path / "run_rate.json").write_text(json.dumps(run))
    # the script's command line in this process (the QUICK session's test runs it as a command)
    assert speed_table.main(["--report", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(NVIDIA H200, torch 2.11.0)" in lines[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines[3:]}
    assert rows["train, batch 64, fp32, no flags"][1:4] == ["6,400 img/s", ">= 6,000 img/s", "yes"]
    assert rows["train, best setting (bf16, batch <= 1024)"][1:4] == ["25,600 img/s", ">= 25,000 img/s", "yes"]
    assert rows["train, best setting (bf16, batch <= 1024)"][4].startswith("batch 1024; b1024 25,600, b256 19,200")
    assert rows["peak memory, batch 256, fp32"][1:4] == ["4.50 GB", "<= 4.70 GB", "yes"]
    assert rows["eval / train at batch 64"][1:4] == ["4.00x", ">= 4.00x", "yes"]
    assert rows["end to end, the study's command as run (the defaults)"][1:4] == ["6,665 img/s", ">= 20,000 img/s", "no"]
    assert rows["end to end, the study's command as run (the defaults)"][4] == (
        "`spikedriven train -c conf/cifar10/2_256_300E_t4.yml --spike-mode if_soft`, 49,984 + 10,000 images, an epoch "
        "every 9.00 s from the run's log (3 timed), 46.5 min for 310 epochs; training and evaluation 8.5 s of it, "
        "first epoch 95.2 s |")  # the row's last cell, with the table's closing bar
    assert rows["end to end (train + eval epoch), the defaults"][1:4] == ["7,498 img/s", ">= 20,000 img/s", "no"]
    assert rows["end to end (train + eval epoch), the defaults"][4].startswith(
        "49,984 + 10,000 images, batch 64, amp none, 41.3 min for 310 epochs")
    assert rows["end to end (train + eval epoch), best setting"][1:4] == ["-", ">= 20,000 img/s", "not measured"]
    assert speed_table.met("peak_memory", 4.71) == "no" and speed_table.met("train_best", 24999.0) == "no"


def test_the_gpu_session_script_runs_every_part_at_toy_sizes(gpu_session):
    """What a session with a lent GPU runs first, tried as QUICK=1 on the CPU: every part exits 0 and the table
    is printed from what the parts wrote."""
    out, done = gpu_session
    assert done.returncode == 0, done.stderr[-2000:]
    parts = ["cuda_tests", "speed_table", "run_rate", "end_to_end_best", "step_overhead", "inference"]
    for part in parts:
        assert (out / f"{part}.txt").read_text().rstrip().endswith(f"exit 0 ({part})")
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 8 and "not measured |" in table  # the header and 7 rows; peak memory: no CUDA here
    assert "| end to end, the study's command as run (the defaults) | - | " in table and "an epoch every" in table
    assert "| end to end (train + eval epoch), best setting | - | " in table and "amp bf16" in table


def test_loader_transfer_times_each_way_a_batch_can_leave_a_worker(tmp_path):
    out = tmp_path / "transfer.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/loader_transfer.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["collate"] for r in rows] == ["float32 tensors", "uint8 tensors", "spikedriven"]
    # --quick: 128 images in batches of 16, a pass each
    assert all(r["batches"] == 8 and r["wall_ms_per_batch"] > 0 and r["main_cpu_ms_per_batch"] >= 0 for r in rows)
    assert "main-process CPU ms" in done.stdout


def test_checkpoint_save_times_both_ways_of_writing_an_epochs_checkpoints(tmp_path):
    out = tmp_path / "checkpoint_save.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/checkpoint_save.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["parameters"] > 0 and r["file_mb"] > 0 and r["repeats"] == 2  # --quick
    assert all(r[key] > 0 for key in ("before_ms", "now_training_thread_ms", "now_until_on_disk_ms", "steps_alone_ms",
                                      "steps_beside_a_write_ms"))
    expected = r["before_ms"] - r["now_training_thread_ms"] - max(r["steps_beside_a_write_ms"] - r["steps_alone_ms"], 0)
    assert abs(r["saved_per_improving_epoch_ms"] - expected) <= 0.03  # each figure is rounded to 0.01 ms
    assert "saved for the training loop per improving epoch" in done.stdout


def test_run_rate_times_whole_epochs_from_the_runs_log():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_rate
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    log = "\n".join([
        "2026-12-06 10:00:00,000 INFO runtime: cuda | ...",
        "2026-12-06 10:01:40,500 INFO epoch 0 | step 10/781 | loss 2.3 | lr 1e-06 | 9,000 img/s | ETA 0:00:05",
        "2026-12-06 10:01:41,250 INFO epoch 0 | lr 1e-06 | train loss 2.3 (mixup) | test loss 2.2 top1 10.00",
        "2026-12-06 10:01:44,000 INFO epoch 1 | step 10/781 | loss 2.2 | lr 0.0005 | 9,000 img/s | ETA 0:00:02",
        "2026-12-06 10:01:45,000 INFO epoch 1 | lr 0.0005 | train loss 2.2 (mixup) | test loss 2.1 top1 20.00",
        "2026-12-06 10:01:49,500 INFO epoch 2 | lr 0.0005 | train loss 2.1 (mixup) | test loss 2.0 top1 30.00",
    ])
    rows = [{"epoch": "0", "epoch_seconds": "99.0"}, {"epoch": "1", "epoch_seconds": "3.5"},
            {"epoch": "2", "epoch_seconds": "4.1"}]
    r = run_rate.summarise(log, rows, train_images=49984, eval_images=10000)
    # epoch lines (not step lines) at 101.25, 105.0 and 109.5 s: periods 3.75 and 4.5, median 4.125 s;
    # 59,984 / 4.125 = 14,541.6 images/s, 310 x 4.125 s = 21.3 min; the first epoch ends 101.25 s after the first line
    assert r["epoch_periods_s"] == [3.75, 4.5] and r["epoch_s"] == 4.125 and r["epochs_logged"] == 3
    assert r["images_per_s"] == 14541.6 and r["projected_310_epochs_min"] == 21.3 and r["first_epoch_s"] == 101.25
    assert r["train_and_eval_s"] == 3.8  # the median of epochs 1 and 2 as summary.csv timed them
    assert "epoch_s" not in run_rate.summarise(log.split("\n2026-12-06 10:01:45")[0], rows, 1, 1)  # one epoch: no period
    # the sets' sizes as the run read them (a generated set may hold fewer images than asked for)
    line = ("2026-12-06 21:28:06,239 INFO run folder /tmp/x/run | torch/cifar10 | if_soft mode u_th=1 | 255 train / "
            "128 test images | cpu | 28942 parameters")
    assert run_rate.SIZES_LINE.search(line).groups() == ("255", "128")
