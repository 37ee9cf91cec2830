"""Where a run's per-epoch scalars go: TensorBoard in the run folder, always; Weights & Biases as well
with ``log_wandb`` (the original's ``--log-wandb``). Both get the same names and values, from one call."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Mapping, Optional

from ..errors import ConfigError, SpikedrivenError

log = logging.getLogger("spikedriven")

WANDB_MISSING = ("log_wandb needs Weights & Biases, which is not installed: pip install 'spikedriven[wandb]' "
                 "(or wandb), or leave --log-wandb off")
# One W&B run per run folder: a resumed run continues the W&B run it started (its id is kept here).
WANDB_ID_FILE = "wandb_run_id"


def check_wandb() -> None:
    """Refuse ``log_wandb`` before anything starts when wandb cannot be imported."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(WANDB_MISSING) from None


class ScalarLog:
    """``log(scalars, epoch)`` writes ``{"train/lr": 3e-4, ...}`` to every sink; ``close(results)`` ends the
    run, the final results going into W&B's run summary."""

    def __init__(self, run_dir: Path, start_epoch: int, wandb_config: Optional[Mapping] = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run's TensorBoard curves drop what it logged after the checkpoint
        self.writer = SummaryWriter(str(run_dir), purge_step=start_epoch)
        self.wandb_run = None
        if wandb_config is not None:
            try:
                self.wandb_run = _start_wandb(run_dir, dict(wandb_config))
            except BaseException:
                self.writer.close()
                raise

    def log(self, scalars: Mapping[str, float], epoch: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()
        if self.wandb_run is not None:
            # x axis "epoch", not W&B's own step: a run resumed from an earlier checkpoint logs epochs again,
            # which W&B would drop as steps that went backwards
            self.wandb_run.log({**scalars, "epoch": epoch})

    def close(self, results: Optional[Mapping] = None) -> None:
        self.writer.close()
        if self.wandb_run is not None:
            if results:
                self.wandb_run.summary.update(dict(results))
            self.wandb_run.finish()
            self.wandb_run = None


def _start_wandb(run_dir: Path, config: dict):
    import wandb

    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    id_file.write_text(run_id + "\n")
    try:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "spikedriven", name=run_dir.name, id=run_id,
                         resume="allow", dir=str(run_dir), config=config)
    except Exception as e:  # not logged in, no network, a bad WANDB_MODE: wandb's own reason, in one line
        reason = " ".join(str(e).split()) or type(e).__name__
        raise SpikedrivenError(f"Weights & Biases could not start a run ({reason}); log in with `wandb login`, "
                               f"or set WANDB_MODE=offline to log locally and `wandb sync` later") from None
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    log.info("Weights & Biases: run %s (%s mode) in project %s", run.id, run.settings.mode, run.project)
    return run
