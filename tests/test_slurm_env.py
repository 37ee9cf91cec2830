"""srun -n N: the tasks become one run's processes, or are refused; never N copies in one folder."""

import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from spikedriven.engine.distributed import slurm_environment
from spikedriven.errors import ConfigError

from helpers import DEMO


def test_slurm_tasks_map_to_torchrun_variables():
    env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    assert slurm_environment(env) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert slurm_environment({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == {}  # one task: a plain run
    assert slurm_environment({**env, "WORLD_SIZE": "2"}) == {}  # torchrun inside the task decides


def test_slurm_tasks_without_a_rendezvous_are_refused():
    with pytest.raises(ConfigError, match="srun started 2 tasks of one run, but MASTER_ADDR and MASTER_PORT"):
        slurm_environment({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_srun_tasks_train_one_run_together(tmp_path):
    port, run = str(_free_port()), tmp_path / "run"
    args = [sys.executable, "-m", "spikedriven", "train", "-c", DEMO, "--epochs", "1", "--warmup-epochs", "0",
            "--cooldown-epochs", "0", "--embed-dim", "16", "--num-heads", "2", "--workers", "0", "--device", "cpu",
            "--output", str(run)]
    base = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    procs = [subprocess.Popen(args, env={**base, "SLURM_NTASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID":
                                         str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                         "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert (run / "results.json").is_file()
    # one run over two processes: each takes half of the 44 steps a single process makes per epoch
    steps = {int(n) for n in re.findall(r"step \d+/(\d+)", outs[0][1] + outs[0][0])}
    assert steps == {22}, outs[0]


STUDY = ["study", "-c", DEMO, "--modes", "if", "--thresholds", "1.0", "--seeds", "2", "--epochs", "1",
         "--warmup-epochs", "0", "--embed-dim", "16", "--num-heads", "2"]


def test_emit_sbatch_prints_one_array_task_per_run_and_the_report_job(tmp_path, capsys):
    from spikedriven.cli import main

    folder = tmp_path / "s"
    assert main([*STUDY, "--study-dir", str(folder), "--emit-sbatch", "--partition", "gpu", "--max-parallel", "1",
                 "--time", "04:00:00"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --time=04:00:00", "#SBATCH --requeue", "#SBATCH --signal=B:TERM@120"):
        assert line in script
    assert script.count("--resume auto") == 2 and "sdt-if-uth1-seed42" in script and "sdt-if-uth1-seed43" in script
    assert "--dependency=afterany:$jobid" in script and "--report-only" in script
    (report,) = [line for line in script.splitlines() if "--wrap" in line]
    for flag in ("--emit-sbatch", "--partition", "--max-parallel", "--time"):
        assert flag not in report
    # the array's task 0 is a real command: run it as Slurm would, then the report job
    path = tmp_path / "study.sbatch"
    path.write_text(script)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
    env.pop("SLURM_NTASKS", None)
    done = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (folder / "runs" / "sdt-if-uth1-seed42" / "eval_last" / "metrics.json").is_file()
    report_args = shlex.split(report.split("--wrap", 1)[1].strip().rstrip("\\").strip())
    report_args = shlex.split(report_args[0])  # the quoted command
    assert report_args[0] == "spikedriven" and main(report_args[1:]) == 0
    assert "missing  sdt-if-uth1-seed43 (not trained)" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--emit-sbatch", "--max-parallel", "0"], "--max-parallel must be >= 1"),
    (["--max-parallel", "2"], "go with --launcher or --emit-sbatch"),
    (["--emit-sbatch", "--time", "4 hours"], "--time '4 hours' is not a Slurm time"),
    (["--emit-sbatch", "--cpus-per-run", "0"], "--cpus-per-run must be >= 1"),
    (["--launcher", "slurm", "--partition", "gpu"], "--launcher slurm needs --time"),
    (["--launcher", "local", "--emit-sbatch"], "give one of them"),
    (["--launcher", "local", "--report-only"], "--report-only writes the tables of what exists"),
])
def test_bad_slurm_options_are_one_sentence(tmp_path, capsys, args, words):
    from spikedriven.cli import main

    assert main([*STUDY, "--study-dir", str(tmp_path / "s"), *args]) == 2
    assert words in capsys.readouterr().err
