"""A study through submitit: the local executor runs the job array and the report job; Slurm's side is
checked against a stand-in sbatch that records what it was given."""

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from spikedriven.cli import main

from helpers import DEMO, read_summary

submitit = pytest.importorskip("submitit")

STUDY = ["study", "-c", DEMO, "--modes", "if", "--thresholds", "1.0", "--seeds", "2", "--epochs", "1",
         "--warmup-epochs", "0", "--cooldown-epochs", "0", "--embed-dim", "16", "--num-heads", "2", "--workers", "0",
         "--device", "cpu"]


def test_a_study_through_submitits_local_executor(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two runs at once on a small machine
    # submitit waits for a job's result file in sleeps of 1-2 s; here the check comes every 0.1 s
    import types

    import submitit.core.core as submitit_core

    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.sleep = lambda seconds: time.sleep(min(seconds, 0.1))
    monkeypatch.setattr(submitit_core, "_time", clock)
    folder = tmp_path / "s"
    assert main([*STUDY, "--study-dir", str(folder), "--launcher", "local"]) == 0
    out = capsys.readouterr().out
    assert "submitted job array" in out and "2 run(s) of the study" in out
    for seed in (42, 43):
        run = folder / "runs" / f"sdt-if-uth1-seed{seed}"
        assert (run / "results.json").is_file() and (run / "eval_last" / "metrics.json").is_file()
    # the report job wrote the tables (and printed them): both seeds in the one row
    assert "| IF, hard reset | 1 | 2 |" in (folder / "results.md").read_text()
    assert "| IF, hard reset | 1 | 2 |" in out
    logs = sorted((folder / "slurm").glob("*_log.out"))
    assert len(logs) == 3  # the array's two tasks and the report job
    assert sum("nothing was trained (--report-only)" in p.read_text() for p in logs) == 1
    # everything is done now: a second submission has nothing to do
    assert main([*STUDY, "--study-dir", str(folder), "--launcher", "local"]) == 2
    assert "every run of the study is done; nothing to submit" in capsys.readouterr().err


def _fake_sbatch(bin_dir: Path, record: Path, fail: str = "") -> None:
    """An ``sbatch`` that keeps each submission script and its arguments and answers with a job id."""
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
record = Path({str(record)!r})
record.mkdir(exist_ok=True)
n = len(list(record.iterdir()))
if {fail!r}:
    print({fail!r}, file=sys.stderr)
    sys.exit(1)
(record / f"{{n}}.json").write_text(json.dumps({{"args": sys.argv[1:], "script": Path(sys.argv[-1]).read_text()}}))
print(f"Submitted batch job {{4242 + n}}")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    srun = bin_dir / "srun"  # submitit looks for it to know it is on a Slurm cluster
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)


def test_launcher_slurm_submits_one_array_and_a_dependent_report_job(tmp_path, capsys, monkeypatch):
    record = tmp_path / "submitted"
    _fake_sbatch(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "s"
    assert main([*STUDY, "--study-dir", str(folder), "--launcher", "slurm", "--partition", "gpu", "--gpus-per-run",
                 "1", "--cpus-per-run", "8", "--max-parallel", "1", "--time", "2:00:00"]) == 0
    out = capsys.readouterr().out
    assert "submitted job array 4242: 2 run(s)" in out and "at most 1 at once" in out
    assert "submitted report job 4243" in out and "squeue -j 4242,4243" in out
    array, report = (json.loads((record / f"{i}.json").read_text())["script"] for i in (0, 1))
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=120", "#SBATCH --signal=USR2@120",
                 "#SBATCH --job-name=spikedriven-study"):
        assert line in array, line
    assert "#SBATCH --dependency=afterany:4242" in report and "--gpus-per-node" not in report
    assert "#SBATCH --dependency" not in array
    # what each task runs: train with --resume auto, then evaluate, through this Python
    pickles = sorted((folder / "slurm").rglob("*_submitted.pkl"))
    tasks = [submitit.helpers.DelayedSubmission.load(p).function for p in pickles]
    runs = sorted((t for t in tasks if hasattr(t, "steps")), key=lambda t: t.name)
    assert [t.name for t in runs] == ["sdt-if-uth1-seed42", "sdt-if-uth1-seed43"]
    train, evaluate = runs[0].steps
    assert train[:2] == ["spikedriven", "train"] and train[-2:] == ["--resume", "auto"]
    assert evaluate[:2] == ["spikedriven", "eval"]
    # the report job's command is the study's, without the submission flags, with --report-only
    (writer,) = [submitit.helpers.DelayedSubmission.load(p) for p in pickles
                 if not hasattr(submitit.helpers.DelayedSubmission.load(p).function, "steps")]
    report_argv, entry = writer.args
    assert report_argv[:2] == ["spikedriven", "study"] and report_argv[-1] == "--report-only"
    from spikedriven.cli.main import main as command_line
    assert entry is command_line  # the command line hands the study its entry point: study never imports cli
    for flag in ("--launcher", "--partition", "--gpus-per-run", "--cpus-per-run", "--max-parallel", "--time"):
        assert flag not in report_argv


def test_a_partition_slurm_refuses_is_one_sentence(tmp_path, capsys, monkeypatch):
    _fake_sbatch(tmp_path / "bin", tmp_path / "submitted",
                 fail="sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: "
                      "Invalid partition name specified")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert main([*STUDY, "--study-dir", str(tmp_path / "s"), "--launcher", "slurm", "--partition", "nope",
                 "--time", "60"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: Slurm refused the job array: sbatch: error: Batch job submission "
                                        "failed: Invalid partition name specified"]


def test_launcher_slurm_off_a_cluster_is_one_sentence(tmp_path, capsys, monkeypatch):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no srun
    assert main([*STUDY, "--study-dir", str(tmp_path / "s"), "--launcher", "slurm", "--time", "60"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: --launcher slurm needs Slurm, and this machine has no srun: submit "
                                        "from a node of the cluster, or try the submission here with --launcher local"]


def test_a_launch_without_submitit_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main([*STUDY, "--study-dir", str(tmp_path / "s"), "--launcher", "slurm", "--time", "60"]) == 2
    err = capsys.readouterr().err
    assert "error: --launcher slurm needs submitit, which is not installed: pip install 'spikedriven[slurm]'" in err
    assert "Traceback" not in err


def test_a_preempted_task_saves_its_run_and_its_requeued_copy_finishes_it(tmp_path):
    """submitit calls ``checkpoint`` on a preemption or at the time limit: the run's process saves where it
    stopped, and the task it returns (the requeued job) continues the run to its end."""
    from spikedriven.study.slurm import RunTask

    run = tmp_path / "run"
    train = ["spikedriven", "train", "-c", DEMO, "--epochs", "3", "--warmup-epochs", "0", "--cooldown-epochs", "0",
             "--embed-dim", "16", "--num-heads", "2", "--workers", "0", "--device", "cpu", "--log-interval", "5",
             "--output", str(run), "--resume", "auto"]
    task = RunTask("run", [train])
    worker = threading.Thread(target=lambda: pytest.raises(Exception, task))
    worker.start()
    deadline = time.time() + 120
    while not (run / "log.txt").exists() or "step 10/44" not in (run / "log.txt").read_text():
        assert time.time() < deadline and worker.is_alive(), "the run did not start"
        time.sleep(0.2)
    requeued = task.checkpoint()
    worker.join(timeout=60)
    log = (run / "log.txt").read_text()
    assert "SIGTERM received: saving a resumable checkpoint" in log and "stopped at epoch 0" in log
    assert not (run / "results.json").exists()
    assert requeued.function.steps == [train]
    assert requeued.result() == "run"  # the requeued job, run here
    assert [r["epoch"] for r in read_summary(run)] == ["0", "1", "2"]
    assert (run / "results.json").is_file()
