"""A study as one Slurm job array, for sites that submit with ``sbatch``.

Each array task trains and evaluates one run with ``--resume auto``, so a requeued task (after a
preemption or the time limit: Slurm sends SIGTERM first and the run saves a resumable checkpoint)
continues where it stopped; a job that depends on the array writes the tables with ``--report-only``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ConfigError


@dataclass(frozen=True)
class SlurmOptions:
    partition: Optional[str] = None
    gpus_per_run: int = 1
    max_parallel: Optional[int] = None
    time: Optional[str] = None  # Slurm's --time, e.g. 24:00:00

    def check(self) -> "SlurmOptions":
        if self.gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        return self


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
SUBMIT_FLAGS = {"--emit-sbatch": 0, "--partition": 1, "--gpus-per-run": 1, "--max-parallel": 1, "--time": 1}


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
