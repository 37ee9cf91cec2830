"""A study as one Slurm job array: submitted through submitit (``--launcher slurm``, or ``local`` to try
the same submission on this machine), or printed as an ``#SBATCH --array`` script (``--emit-sbatch``).

Each array task trains and evaluates one run with ``--resume auto``, so a requeued task (after a
preemption or the time limit: the run gets SIGTERM first and saves a resumable checkpoint) continues
where it stopped; a job that depends on the array writes the tables with ``--report-only``.
"""

from __future__ import annotations

import logging
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError, SpikedrivenError

log = logging.getLogger("spikedriven")

LAUNCHERS = ("slurm", "local")  # submitit's executors: a Slurm cluster, or processes on this machine
SUBMITIT_MISSING = ("--launcher {} needs submitit, which is not installed: pip install 'spikedriven[slurm]' "
                    "(or submitit), or print a job script with --emit-sbatch")
# The run's SIGTERM handler saves a checkpoint within a step; this long is waited for it before a requeue.
SAVE_GRACE_S = 100
SIGNAL_DELAY_S = 120  # the time-limit warning comes this long before the limit (sbatch's --signal)


@dataclass(frozen=True)
class SlurmOptions:
    launcher: str = "sbatch"  # sbatch: print the script; slurm / local: submit through submitit
    partition: Optional[str] = None
    gpus_per_run: int = 1
    max_parallel: Optional[int] = None
    time: Optional[str] = None  # Slurm's --time, e.g. 24:00:00
    cpus_per_run: Optional[int] = None
    # the command line's entry point (argv -> exit status), which the report job calls with --report-only in its
    # own process; given by the command line, which sits above the study (the study never imports it)
    entry: Optional[Callable[[list[str]], int]] = None

    def check(self) -> "SlurmOptions":
        if self.gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        if self.cpus_per_run is not None and self.cpus_per_run < 1:
            raise ConfigError(f"--cpus-per-run must be >= 1, got {self.cpus_per_run}")
        if self.time is not None:
            time_minutes(self.time)
        if self.launcher == "slurm" and self.time is None:
            # submitit would ask Slurm for its own default of 5 minutes
            raise ConfigError("--launcher slurm needs --time, each run's time limit (e.g. 24:00:00 or 2-00:00:00); "
                              "a run that reaches it is requeued and resumes")
        return self


def time_minutes(text: str) -> int:
    """Slurm's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes, rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ConfigError(f"--time {text!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    else:  # MM[:SS]
        seconds = int(first) * 60 + int(second or 0)
    if seconds <= 0:
        raise ConfigError(f"--time {text!r} must be longer than zero")
    return -(-seconds // 60)


def sbatch_script(commands: list[str], report_command: str, folder: Path, options: SlurmOptions) -> str:
    """The ``#SBATCH --array`` script: task i runs ``commands[i]``."""
    if not commands:
        raise ConfigError("every run of the study is done; nothing to submit (--report-only writes the tables)")
    limit = f"%{options.max_parallel}" if options.max_parallel else ""
    logs = folder / "slurm"
    lines = [
        "#!/bin/bash",
        f"# {len(commands)} run(s) of the study in {folder}, one array task each. Submit the array and the",
        "# job that writes the tables when every task has ended:",
        "#   jobid=$(sbatch --parsable THIS_FILE) && \\",
        f"#   sbatch --dependency=afterany:$jobid --job-name=spikedriven-report --output={logs}/report-%j.out \\",
        f"#          --wrap {shlex.quote(report_command)}",
        "#SBATCH --job-name=spikedriven-study",
        f"#SBATCH --array=0-{len(commands) - 1}{limit}",
        f"#SBATCH --output={logs}/%A_%a.out",
        "#SBATCH --ntasks=1",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:TERM@120  # SIGTERM two minutes before the limit: the run saves a resumable checkpoint",
    ]
    if options.partition:
        lines.append(f"#SBATCH --partition={options.partition}")
    if options.gpus_per_run:
        lines.append(f"#SBATCH --gpus-per-task={options.gpus_per_run}")
    if options.cpus_per_run:
        lines.append(f"#SBATCH --cpus-per-task={options.cpus_per_run}")
    if options.time:
        lines.append(f"#SBATCH --time={options.time}")
    lines += ["set -euo pipefail", f"mkdir -p {shlex.quote(str(logs))}", "runs=("]
    lines += [f"  {shlex.quote(c)}" for c in commands]
    lines += [")",
              "# the run in a process group of its own, and Slurm's SIGTERM passed on to it: a shell waiting",
              "# for a child does not forward signals, and the run needs it to save its checkpoint",
              'setsid bash -c "${runs[$SLURM_ARRAY_TASK_ID]}" &',
              "run=$!",
              "trap 'kill -TERM -- -$run 2>/dev/null || true; wait $run' TERM",
              "wait $run", ""]
    return "\n".join(lines)


# Flags of the submitting command that the report job must not repeat, with how many values each takes.
SUBMIT_FLAGS = {"--emit-sbatch": 0, "--launcher": 1, "--partition": 1, "--gpus-per-run": 1, "--max-parallel": 1,
                "--time": 1, "--cpus-per-run": 1}


def report_command(command_line: str) -> str:
    """The study's command without its submission flags, plus ``--report-only``."""
    words, kept, skip = shlex.split(command_line), [], 0
    for word in words:
        if skip:
            skip -= 1
            continue
        name = word.split("=", 1)[0]
        if name in SUBMIT_FLAGS:
            skip = 0 if "=" in word else SUBMIT_FLAGS[name]
            continue
        kept.append(word)
    return shlex.join([*kept, "--report-only"])


# ------------------------------------------------------------------ submitit

def executable(step: list[str]) -> list[str]:
    """A step as the shell reads it (``spikedriven ...``, ``torchrun ...``) run by this Python, which is the
    one submitit starts the job with: the console scripts need not be on the job's PATH."""
    programs = {"spikedriven": [sys.executable, "-m", "spikedriven"],
                "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
    return programs.get(step[0], step[:1]) + step[1:]


class RunTask:
    """One array task: train (``--resume auto``) and evaluate one run, each step a process of its own.

    A preemption or the time limit reaches submitit's handler in this process (``checkpoint``): the step
    running gets SIGTERM, saves where it stopped, and the task is requeued with the same steps, which
    continue from that checkpoint. The steps ignore submitit's SIGUSR2 (Slurm sends it to the whole job),
    which would otherwise end a run without saving it."""

    def __init__(self, name: str, steps: list[list[str]]):
        self.name, self.steps = name, steps
        self.process: Optional[subprocess.Popen] = None

    def __call__(self) -> str:
        for step in self.steps:
            # a session of its own: a signal meant for the task does not also reach a torchrun's workers twice
            self.process = subprocess.Popen(executable(step), start_new_session=True,
                                            preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
            try:
                code = self.process.wait()
            except BaseException:  # Ctrl-C of a local launch: the step, in a session of its own, saves and stops
                self.stop_step()
                raise
            self.process = None
            if code:
                raise SpikedrivenError(f"{self.name}: {shlex.join(step)} exited with status {code}")
        return self.name

    def checkpoint(self):
        """submitit's hook on a preemption or the time limit: the task to requeue, once the run has saved."""
        import submitit

        log.warning("%s: asked to stop (preemption or time limit); the run saves its checkpoint", self.name)
        self.stop_step()
        return submitit.helpers.DelayedSubmission(RunTask(self.name, self.steps))

    def stop_step(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SAVE_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def write_tables(report: list[str], entry: Callable[[list[str]], int]) -> str:
    """The report job: the study's command with ``--report-only``, in this process, through ``entry``."""
    code = entry(report[1:])
    if code:
        raise SpikedrivenError(f"writing the tables failed: {shlex.join(report)} exited with status {code}")
    return "tables written"


def submit(runs: list[tuple[str, list[list[str]]]], report: str, folder: Path, options: SlurmOptions, out) -> None:
    """Submit one job array (a task per run) and the job that writes the tables once every task has ended.

    On Slurm the report job waits through ``--dependency=afterany`` and this returns at once; the local
    executor has no dependencies, so this waits for the array there and then runs the report job."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(SUBMITIT_MISSING.format(options.launcher)) from None
    if not runs:
        raise ConfigError("every run of the study is done; nothing to submit (--report-only writes the tables)")
    logs = folder / "slurm"
    executor = _executor(submitit, options, logs, name="spikedriven-study", gpus=options.gpus_per_run,
                         cpus=options.cpus_per_run, slurm_array_parallelism=options.max_parallel)
    tasks = [RunTask(name, steps) for name, steps in runs]
    try:
        with _quiet():
            jobs = executor.submit_array(tasks)
    except Exception as e:  # sbatch's refusal (a partition that does not exist, an account, a limit)
        raise SpikedrivenError(f"Slurm refused the job array: {_one_line(e)}") from None
    array_id = str(jobs[0].job_id).split("_")[0]
    print(f"submitted job array {array_id}: {len(jobs)} run(s) of the study in {folder}"
          + (f", at most {options.max_parallel} at once" if options.max_parallel else "") + f"; logs in {logs}", file=out)
    report_argv = shlex.split(report)
    if options.launcher == "slurm":
        reporter = _executor(submitit, options, logs, name="spikedriven-report", gpus=0,
                             slurm_additional_parameters={"dependency": f"afterany:{array_id}"})
        try:
            with _quiet():
                job = reporter.submit(write_tables, report_argv, options.entry)
        except Exception as e:
            raise SpikedrivenError(f"Slurm refused the report job (the array {array_id} was submitted): "
                                   f"{_one_line(e)}") from None
        print(f"submitted report job {job.job_id}: when every run has ended it writes {folder / 'results.md'} "
              f"(squeue -j {array_id},{job.job_id} shows them)", file=out)
        return
    failed = []
    for task, job in zip(tasks, jobs):
        try:
            job.result()
        except Exception:
            failed.append(task.name)
    _executor(submitit, options, logs, name="spikedriven-report", gpus=0).submit(write_tables, report_argv,
                                                                            options.entry).result()
    print((folder / "results.md").read_text(), file=out)
    if failed:
        raise SpikedrivenError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their logs in {logs}")


def _executor(submitit, options: SlurmOptions, logs: Path, name: str, gpus: int, cpus: Optional[int] = None, **slurm):
    # a long study meets the time limit many times; each time its run resumes where it stopped
    try:
        executor = submitit.AutoExecutor(folder=logs, cluster=options.launcher, slurm_max_num_timeout=100,
                                         local_max_num_timeout=100)
    except RuntimeError:  # submitit finds no srun
        raise ConfigError("--launcher slurm needs Slurm, and this machine has no srun: submit from a node of the "
                          "cluster, or try the submission here with --launcher local") from None
    if options.launcher == "local":
        import torch

        gpus = min(gpus, torch.cuda.device_count())
    params = dict(name=name, nodes=1, tasks_per_node=1, stderr_to_stdout=True,
                  timeout_min=time_minutes(options.time) if options.time else 7 * 24 * 60,  # local: no real limit
                  slurm_signal_delay_s=SIGNAL_DELAY_S)
    if options.partition:
        params["slurm_partition"] = options.partition
    if gpus:  # a job without GPUs asks for none: some sites refuse a GPU request of 0
        params["gpus_per_node"] = gpus
    if cpus:
        params["cpus_per_task"] = cpus
    params.update({key: value for key, value in slurm.items() if value is not None})
    executor.update_parameters(**params)
    return executor


def _quiet():
    """submitit prints sbatch's stderr before raising it; it is said once, in the error's sentence."""
    import contextlib
    import io

    return contextlib.redirect_stderr(io.StringIO())


def _one_line(error: BaseException) -> str:
    """submitit's error: sbatch's own message (its stderr) in one line, else the exception's."""
    text = getattr(error, "stderr", None) or getattr(error, "output", None) or str(error)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    found = [line for line in lines if "error" in line.lower()]
    return (found or lines or [type(error).__name__])[-1]
