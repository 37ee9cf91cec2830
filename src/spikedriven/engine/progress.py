"""What a run says while it trains: a progress bar on a terminal, a line every log_interval steps, the epoch's
line and scalars."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Optional

from tqdm import tqdm

from .tracking import ScalarLog

log = logging.getLogger("spikedriven")


class EpochProgress:
    """A bar on a terminal, and a line every ``log_interval`` steps in the log and on the
    console: step, mean loss since the last line, lr, images/s (all processes), ETA of the epoch."""

    def __init__(self, epoch: int, steps: int, start_step: int, lr: float, log_every: int, world: int, show_bar: bool):
        self.epoch, self.steps, self.lr, self.log_every, self.world = epoch, steps, lr, log_every, world
        self.bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch}", disable=not show_bar, unit="step", leave=False)
        self.started = self.since = time.perf_counter()
        self.start_step = start_step
        self.loss_sum, self.images = 0.0, 0

    def __call__(self, step: int, loss: float, images: int) -> None:
        now = time.perf_counter()
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{loss:.4f}")
        self.loss_sum, self.images = self.loss_sum + loss * images, self.images + images
        if step % self.log_every:
            return
        rate = self.images * self.world / max(now - self.since, 1e-9)
        eta = (self.steps - step) * (now - self.started) / max(step - self.start_step, 1)
        log.info("epoch %d | step %d/%d | loss %.4f | lr %.3g | %s img/s | ETA %s", self.epoch, step, self.steps,
                 self.loss_sum / self.images, self.lr, f"{rate:,.0f}", timedelta(seconds=round(eta)))
        self.since, self.loss_sum, self.images = now, 0.0, 0

    def close(self) -> None:
        self.bar.close()


def log_epoch(scalars: ScalarLog, row: dict, rates: dict, mean_rate: Optional[float], learned: dict, stats: dict,
              mixup_on: bool, eval_name: str) -> None:
    values = {f"{'train' if key in ('lr', 'train_loss', 'images_per_s') else eval_name}/{key}": row[key]
              for key in ("lr", "train_loss", "eval_loss", "eval_top1", "eval_top5", "images_per_s")}
    values.update({f"firing_rate/{name}": rate for name, rate in rates.items()})
    if mean_rate is not None:
        values["firing_rate/mean"] = mean_rate
    for layer, settings in learned.items():  # PLIF's tau, a learned threshold
        values.update({f"neuron/{layer}/{key}": value for key, value in settings.items()})
    scalars.log(values, row["epoch"])
    extra = f" | skipped {stats['skipped_steps']} non-finite steps" if stats["skipped_steps"] else ""
    log.info("epoch %d | lr %.3g | train loss %.4f%s | %s loss %.4f top1 %.2f top5 %.2f | mean firing rate %s | %.1fs, %.0f img/s%s",
             row["epoch"], row["lr"], row["train_loss"], " (mixup)" if mixup_on else "", eval_name, row["eval_loss"],
             row["eval_top1"], row["eval_top5"], "-" if mean_rate is None else f"{mean_rate:.4f}", row["epoch_seconds"],
             row["images_per_s"], extra)
