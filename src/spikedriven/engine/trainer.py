"""A training run, top to bottom: config -> data -> model -> epochs -> run folder.

The run folder's files are described in ``run_folder``; which checkpoint and
settings a resumed run continues with, in ``resume``.

Reproducibility: the sampler orders data from (seed, epoch), each image's
augmentation is seeded from (seed, epoch, index) (``data``), and every epoch
reseeds the main process's generators from (seed, epoch, rank), so a run
resumed from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..atomic import write_text_atomic
from ..config import Config, save_config
from ..data import build_datasets, build_eval_loader, build_test_dataset, build_train_loader
from ..encodings import build_encoder
from ..errors import ConfigError, DataError, user_message
from ..models import build_model
from ..runtime import Runtime
from ..spike_ops import set_backward_memory
from . import checkpoint as ckpt_io
from .checkpoint_writer import CheckpointWriter
from .distributed import DistInfo, barrier, init_distributed, shutdown
from .loop import FP16_NEEDS_CUDA, EpochState, StepOptions, StopRequested, evaluate, train_one_epoch
from .progress import EpochProgress, log_epoch
from .recipe import build_optimizer_and_scheduler, build_teacher, make_mixup_and_loss, warn_schedule
from .recorder import SpikeRecorder, learned_settings, neuron_layers
from .resume import ResumePlan, describe_changes, describe_progress, is_behind, newest_checkpoint
from .rng import epoch_seed, rng_state, seed_everything, set_rng_state
from .run_folder import (SummaryCSV, default_run_dir, holds_run, move_aside, prepare_run_dir, refuse_if_holds_run,
                         setup_logging, RunCurves)
from .signals import RunStopped, StopFlag
from .tracking import ScalarLog, check_wandb

log = logging.getLogger("spikedriven")


# --------------------------------------------------------------------- run


def train(cfg: Config, plan: ResumePlan, command_hint: str = "spikedriven train", *, overwrite: bool = False,
          resume_command: Optional[str] = None, schedule_warning: bool = True) -> Path:
    """Train per ``cfg``; returns the run folder. Raises RunStopped after a signal.

    ``command_hint`` is how the user started training (``spikedriven train``,
    ``python train.py``); ``resume_command``, when given, is the whole command
    that continues this run (a study's own command line), else it is
    ``<command_hint> --resume <checkpoint>``. ``schedule_warning``: warn, once the run is set up, when it ends
    inside its warm-up or before mixup switches off (a study warns once for all its runs instead).
    """
    dist, device = init_distributed(cfg.device)
    trainer = Trainer(cfg, plan, dist, device, command_hint=command_hint, overwrite=overwrite,
                      resume_command=resume_command, schedule_warning=schedule_warning)
    try:
        return trainer.run()
    finally:
        trainer.release()
        shutdown(dist)


KD_NEEDS_A_TEACHER = ("kd: true gives the model a distillation head, which learns a teacher's predictions: give "
                      "teacher (a timm model name) and teacher_checkpoint (its weights), or train with kd: false; "
                      "a kd checkpoint evaluates and exports without one")


def place_model(cfg: Config, runtime: Runtime) -> nn.Module:
    """The model on the run's device, in the memory format and with the backward memory its runtime chose."""
    if runtime.device.type == "cuda":
        # fixed input sizes: let cuDNN time its algorithms once and keep the fastest
        torch.backends.cudnn.benchmark = True
    model = build_model(cfg).to(runtime.device)
    set_backward_memory(model, runtime.backward_memory)
    return model.to(memory_format=torch.channels_last) if runtime.channels_last else model


def compile_model(cfg: Config, model: nn.Module, runtime: Runtime) -> nn.Module:
    """The model to train: compiled when the runtime chose a compile mode."""
    if runtime.compile_mode is None:
        return model
    if cfg.compile is None:  # chosen for the user: an unexpected compiler failure falls back to eager
        torch._dynamo.config.suppress_errors = True
    log.info("torch.compile mode %s%s (the first steps compile)", runtime.compile_mode,
             " (auto)" if cfg.compile is None else "")
    if runtime.backward_memory != "full":
        log.info("under torch.compile spike inputs are kept as bool; the compiler chooses what else backward keeps")
    return torch.compile(model, mode=runtime.compile_mode)


class Trainer:
    """One training run as named steps, in the order ``run`` takes them:

        setup -> restore -> open_run_folder -> (train_epoch -> evaluate_epoch -> save)* -> finish

    ``stopped`` is the one way out of an epoch that did not end (a stop request, a sample that cannot be read):
    it saves where the run is, with every generator's state, so the resumed run continues exactly.
    ``state_dict`` is what a checkpoint holds and ``load_state_dict`` what a resume restores from it.
    Everything that can fail on bad input runs before ``open_run_folder`` creates or changes any folder.
    """

    def __init__(self, cfg: Config, plan: ResumePlan, dist: DistInfo, device: torch.device, *,
                 command_hint: str = "spikedriven train", overwrite: bool = False,
                 resume_command: Optional[str] = None, schedule_warning: bool = True):
        self.cfg, self.plan, self.dist, self.device = cfg, plan, dist, device
        self.command_hint, self.overwrite, self.resume_command = command_hint, overwrite, resume_command
        self.schedule_warning = schedule_warning
        self.lock = None  # the run folder's, held from open_run_folder until release
        self.start_epoch, self.epoch_state = 0, EpochState()
        self.best: dict = {"eval_top1": None, "epoch": None}
        self.resume_rng: Optional[dict] = None  # a stopped run's generators, set again as its epoch restarts
        self.scalars: Optional[ScalarLog] = None
        self.stop = StopFlag()
        # the epochs' checkpoints are written while the next epoch trains; each stop waits for them
        self.writer = CheckpointWriter()

    # ------------------------------------------------------------ the run

    def run(self) -> Path:
        self.setup()
        self.restore()
        self.open_run_folder()
        try:
            with self.writer, self.stop.installed():
                for epoch in range(self.start_epoch, self.total_epochs):
                    self.run_epoch(epoch)
            self.finish()
        except KeyboardInterrupt:  # a second Ctrl-C, or one while the results are written: stop now, without saving
            raise self.stopped_at_once() from None
        finally:
            if self.scalars is not None:  # a stopped run's logs end where it stopped; its resume appends to them
                self.scalars.close()
        barrier(self.dist)
        return self.run_dir

    def run_epoch(self, epoch: int) -> None:
        started = time.perf_counter()
        stats = self.train_epoch(epoch)
        train_seconds = time.perf_counter() - started
        metrics, rates, mean_rate = self.evaluate_epoch(epoch)
        row = {
            "epoch": epoch, "lr": self.lr, "train_loss": stats["train_loss"],
            "eval_loss": metrics["eval_loss"], "eval_top1": metrics["eval_top1"], "eval_top5": metrics["eval_top5"],
            "train_seconds": round(train_seconds, 3), "epoch_seconds": round(time.perf_counter() - started, 3),
            # this process's share of the epoch: after a mid-epoch resume, the steps trained since
            "images_per_s": round(stats["images_this_call"] / max(train_seconds, 1e-9), 1),
            "mean_firing_rate": "" if mean_rate is None else mean_rate,
        }
        improved = self.best["eval_top1"] is None or metrics["eval_top1"] > self.best["eval_top1"]
        if improved:
            self.best = {"eval_top1": metrics["eval_top1"], "epoch": epoch}
        self.epoch_state = EpochState()
        self.save(epoch, row, rates, mean_rate, stats, improved)
        barrier(self.dist)
        if not self.dist.enabled and self.stop() and epoch + 1 < self.total_epochs:
            # last.pth.tar, just saved, already holds this point: the next epoch reseeds from (seed, epoch)
            self.writer.wait()
            log.warning("stopped after epoch %d; resume with: %s", epoch, self.resume_hint(self.last))
            raise self.run_stopped()

    # ------------------------------------------------------------ set up

    def setup(self) -> None:
        """Check the input, then build the data, the encodings, the model, the teacher and the optimisation."""
        cfg, dist, device = self.cfg, self.dist, self.device
        self._check(cfg)
        self.run_dir = self.plan.run_dir or (Path(cfg.output) if cfg.output else default_run_dir(cfg))
        self.last = self.run_dir / "last.pth.tar"
        # A new run never writes into another run's folder; with --overwrite the old one is moved aside.
        self.replacing = self.plan.run_dir is None and holds_run(self.run_dir)
        if self.replacing and not self.overwrite:
            refuse_if_holds_run(self.run_dir, self.command_hint)
        self.runtime = runtime = Runtime.resolve(cfg, device, dist)  # every "auto" of the config, decided once
        seed_everything(cfg.seed)
        self.splits = build_datasets(cfg)
        self.train_loader = build_train_loader(cfg, self.splits.train, dist.rank, dist.world, device,
                                               workers=runtime.workers, channels_last=runtime.channels_last)
        self.eval_loader = build_eval_loader(cfg, self.splits.eval, dist.rank, dist.world, device,
                                             workers=runtime.workers, channels_last=runtime.channels_last)
        self.train_encoder, self.eval_encoder = build_encoder(cfg, training=True), build_encoder(cfg, training=False)
        self.model = place_model(cfg, runtime)
        self.teacher = build_teacher(cfg, device) if cfg.teacher is not None else None
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer, self.scheduler, self.total_epochs = build_optimizer_and_scheduler(
            cfg, self.model, fused=runtime.fused_optimizer, updates_per_epoch=self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        self.options = StepOptions(device=device, dist=dist, amp=cfg.amp, scaler=self.scaler, clip_grad=cfg.clip_grad,
                                   nonfinite=cfg.nonfinite, sync_every=10, log_every=cfg.log_interval,
                                   cuda_graphs=runtime.cuda_graphs)

    def _check(self, cfg: Config) -> None:
        """What this machine and the config's parts must agree on before anything is built."""
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(FP16_NEEDS_CUDA)
        if cfg.model_settings().get("kd") and cfg.teacher is None:
            raise ConfigError(KD_NEEDS_A_TEACHER)
        if cfg.log_wandb:
            check_wandb()

    def restore(self) -> None:
        """The plan's checkpoint: weights alone (a fine-tune), or the whole state of a run to continue. A
        checkpoint of another shape is refused here, before any folder changes."""
        plan = self.plan
        self.mismatched = []  # a fine-tune's weights trained with other settings, named in the log
        if plan.checkpoint is None:
            return
        if not plan.full:
            self.mismatched = ckpt_io.settings_mismatch(self.model, plan.contents)
        ckpt = ckpt_io.load_into(self.model, plan.contents, plan.checkpoint, check_settings=plan.full,
                                 new_heads=not plan.full)
        if plan.full:
            self.load_state_dict(ckpt)

    def state_dict(self, epoch: int, rng: Optional[dict] = None) -> dict:
        """The checkpoint: the run at the start of ``epoch`` (its step ``epoch_state.step``); ``rng``, every
        generator's state, where the run stopped inside an epoch."""
        return {
            "epoch": epoch, "step": self.epoch_state.step, "epoch_state": vars(self.epoch_state).copy(),
            "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
            "config": self.cfg.to_dict(), "model_args": self.cfg.model_kwargs(),
            "best": self.best, "eval_set": self.splits.eval_name, "rng": rng,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        """Continue from ``ckpt`` (its weights are loaded by ``restore``)."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if not self.plan.replans_schedule:  # else the new length's schedule, built in setup, is the one to follow
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.epoch_state = EpochState(**ckpt.get("epoch_state", {}))
        self.best = ckpt.get("best", self.best)
        self.resume_rng = ckpt.get("rng")

    def open_run_folder(self) -> None:
        """Everything that can fail on bad input has run: only now create the run folder (its lock held until
        ``release``), then log what the run is and open its records."""
        dist, moved_to = self.dist, None
        if dist.is_main:
            moved_to = move_aside(self.run_dir) if self.replacing else None
            self.lock = prepare_run_dir(self.run_dir)
        barrier(dist)
        setup_logging(self.run_dir, dist.is_main)
        if moved_to is not None:
            log.info("moved the run that was in %s to %s (--overwrite)", self.run_dir, moved_to)
        self._log_restored()
        self._log_setup()
        self._prepare_models()
        self._open_records()

    def _log_restored(self) -> None:
        plan = self.plan
        if plan.full:
            log.info("resuming %s at epoch %d, step %d", plan.checkpoint, self.start_epoch, self.epoch_state.step)
            for change in describe_changes(plan):
                log.info("resume: %s", change)
            if (self.dist.is_main and Path(plan.checkpoint).resolve() != self.last.resolve()
                    and is_behind(self.last, plan.contents)):
                # A stop between an improving epoch's best and last writes leaves best the newer;
                # last.pth.tar must hold the state the run continues from (and, finished, its final state).
                ckpt_io.save_checkpoint(self.last, plan.contents)
        elif plan.checkpoint is not None:
            log.info("loaded weights from %s (optimizer and schedule start fresh)", plan.checkpoint)
            if self.mismatched:
                log.info("those weights were trained with other settings: %s", "; ".join(self.mismatched))

    def _log_setup(self) -> None:
        log.info(self.runtime.describe(self.cfg))
        log.info("neurons: %s; evaluation images %s", describe_neuron_path(self.model, self.runtime),
                 "used as stored, a batch per lookup" if self.splits.eval.transform is None else "transformed one by one")
        if self.train_encoder is not None:
            evaluation = ("evaluation batches alike" if self.eval_encoder is not None
                          else "evaluation on the analogue image (encode_eval false)")
            log.info("input encoding %s: training batches after mixup, %s", self.train_encoder.describe(), evaluation)

    def _prepare_models(self) -> None:
        """``train_model`` takes the steps: compiled where the runtime chose it, wrapped for torchrun; the
        per-epoch evaluation runs the compiled model too (its neurons count their spikes inside the graph)."""
        self.train_model = compile_model(self.cfg, self.model, self.runtime)
        self.eval_model = self.train_model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.train_model, device_ids=ids)

    def _open_records(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.summary, self.curves = SummaryCSV(self.run_dir / "summary.csv"), RunCurves(self.run_dir)
        if dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            self.summary.keep_before(self.start_epoch)
            self.scalars = ScalarLog(self.run_dir, self.start_epoch, wandb_config=cfg.to_dict() if cfg.log_wandb else None)
        splits = self.splits
        log.info("run folder %s | %s | %s | %s mode u_th=%g | %d train / %d %s images | %s | %d parameters",
                 self.run_dir, cfg.dataset, cfg.model, cfg.spike_mode, cfg.v_threshold, len(splits.train),
                 len(splits.eval), splits.eval_name, self.device, sum(p.numel() for p in self.model.parameters()))
        if self.schedule_warning and dist.is_main:  # after every check of the input: an error is never preceded by it
            warn_schedule(cfg, log)

    # ------------------------------------------------------------ an epoch

    def train_epoch(self, epoch: int) -> dict:
        """Train one epoch (from ``epoch_state.step`` after a mid-epoch resume); its learning rate in ``lr``."""
        cfg = self.cfg
        # a mid-epoch resume starts the sampler where the run stopped
        self.train_loader.sampler.set_epoch(epoch, skip=self.epoch_state.step * cfg.batch_size)
        batches = iter(self.train_loader)
        # after starting the loader, which may or may not draw a worker seed from these generators
        seed_everything(epoch_seed(cfg, epoch, self.dist.rank))
        if self.resume_rng is not None:
            set_rng_state(self.resume_rng)
            self.resume_rng = None
        self.scheduler.step(epoch)
        on_step = self._lr_per_step(epoch)
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.mixup_on = (cfg.mixup > 0 or cfg.cutmix > 0) and (cfg.mixup_off_epoch == 0 or epoch < cfg.mixup_off_epoch)
        mixup, loss_fn = make_mixup_and_loss(cfg, self.mixup_on, self.device, self.teacher)
        progress = EpochProgress(epoch, self.steps_per_epoch, self.epoch_state.step, self.lr, cfg.log_interval,
                                 self.dist.world, show_bar=self.dist.is_main and sys.stderr.isatty())
        with contextlib.closing(progress), self.saved_on_stop(epoch, evaluating=False):
            return train_one_epoch(self.train_model, batches, self.optimizer, loss_fn, self.options, epoch=epoch,
                                   state=self.epoch_state, mixup=mixup, encoder=self.train_encoder,
                                   stop_requested=self.stop, on_sync=progress, on_step=on_step)

    def _lr_per_step(self, epoch: int) -> Optional[Callable[[int], None]]:
        """With ``sched_on_updates``, the lr of every step from its fractional epoch (a resumed epoch's too)."""
        if not self.cfg.sched_on_updates:
            return None
        first = epoch * self.steps_per_epoch

        def on_step(step: int) -> None:
            self.scheduler.step_update(first + step)

        on_step(self.epoch_state.step)
        return on_step

    def evaluate_epoch(self, epoch: int) -> tuple[dict, dict, Optional[float]]:
        """The epoch's evaluation with its firing rates: metrics, the mean rate per layer, the mean rate.
        A stop here saves the epoch's training whole; the resumed run evaluates it."""
        recorder = SpikeRecorder(self.eval_model)
        with self.saved_on_stop(epoch, evaluating=True):
            metrics = evaluate(self.eval_model, self.eval_loader, self.device, dist=self.dist, amp=self.cfg.amp,
                               recorders=(recorder,), stop_requested=self.stop, cuda_graphs=self.runtime.cuda_graphs,
                               encoder=self.eval_encoder)
        per_step, mean_rate = recorder.firing_rates(self.dist)
        return metrics, {name: float(r.mean()) for name, r in per_step.items()}, mean_rate

    def save(self, epoch: int, row: dict, rates: dict, mean_rate: Optional[float], stats: dict,
             improved: bool) -> None:
        """The epoch's records and checkpoints (best first: a kill between the two leaves best the newer, which
        a resume detects); the run's curves are drawn while the checkpoints are written."""
        if not self.dist.is_main:
            return
        self.summary.append(row)
        log_epoch(self.scalars, row, rates, mean_rate, learned_settings(self.model), stats, self.mixup_on,
                  self.splits.eval_name)
        paths = [self.run_dir / "best.pth.tar"] if improved else []
        self.writer.save(self.state_dict(epoch + 1), *paths, self.last)
        self.curves.update(final=epoch + 1 == self.total_epochs or (not self.dist.enabled and self.stop()))

    def finish(self) -> None:
        if self.dist.is_main:
            self.scalars.close(write_results(self.cfg, self.run_dir, self.model, self.device, self.dist,
                                             self.splits.eval_name))
            self.scalars = None

    # ------------------------------------------------------------ stop

    def resume_hint(self, checkpoint: Path) -> str:
        return self.resume_command or f"{self.command_hint} --resume {shlex.quote(str(checkpoint))}"

    def run_stopped(self) -> RunStopped:
        hint = self.resume_hint(self.last)
        return RunStopped(128 + (self.stop.signal or signal.SIGINT), f"training interrupted; resume with: {hint}")

    @contextlib.contextmanager
    def saved_on_stop(self, epoch: int, evaluating: bool):
        """The one handler for an epoch that cannot go on: a stop request, or a sample that cannot be read
        (which is named, with the command that resumes once the file is fixed). Either way the run saves
        where it stopped."""
        try:
            yield
        except StopRequested:
            raise self.stopped(epoch) from None
        except DataError as e:
            self.stopped(epoch)
            where = (f"its epoch {epoch} before evaluating it" if evaluating
                     else f"where it stopped (epoch {epoch}, step {self.epoch_state.step})")
            raise DataError(f"{user_message(e)}; the run saved {where}: fix the file, then resume with: "
                            f"{self.resume_hint(self.last)}") from None

    def stopped(self, epoch: int) -> RunStopped:
        """Save where the run stopped (with every generator's state, so it continues exactly)."""
        if self.dist.is_main:
            self.writer.save(self.state_dict(epoch, rng_state()), self.last)
            self.writer.wait()
            log.warning("stopped at epoch %d, step %d; checkpoint saved to %s", epoch, self.epoch_state.step, self.last)
            log.warning("resume with: %s", self.resume_hint(self.last))
        return self.run_stopped()

    def stopped_at_once(self) -> RunStopped:
        """A second Ctrl-C: nothing more is saved; the newest checkpoint is named."""
        found, ckpt = newest_checkpoint(self.run_dir) if self.dist.is_main else (None, None)
        if found is None:
            return RunStopped(130, "stopped at once (Ctrl-C) before the first checkpoint: nothing was saved")
        return RunStopped(130, f"stopped at once (Ctrl-C); what was trained since the last checkpoint is lost; "
                               f"last checkpoint: {describe_progress(ckpt)} ({found})\nresume with: {self.resume_hint(found)}")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def describe_neuron_path(model: nn.Module, runtime: Runtime) -> str:
    """Which implementation the model's neurons run, for the run's log."""
    layers = list(neuron_layers(model).values())
    if not layers:
        return "none"
    name, fusable = layers[0].name, all(m.fused_form() is not None for m in layers)
    if runtime.fused_kernels:
        return f"{name}, fused Triton kernels" if fusable else f"{name} has no fused form: its PyTorch code runs on the GPU"
    return f"{name}, per-step loop (the fused kernels run on CUDA)" if fusable else f"{name}, its PyTorch code (no fused form)"


def write_results(cfg: Config, run_dir: Path, model, device, dist: DistInfo, eval_name: str) -> dict:
    """``results.json``: best and final accuracy; with a held-out split, also both on the test set."""
    with open(run_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best_row = max(rows, key=lambda r: float(r["eval_top1"]))
    results = {
        "eval_set": eval_name,
        "best_epoch": int(best_row["epoch"]), "best_top1": float(best_row["eval_top1"]),
        "final_epoch": int(rows[-1]["epoch"]), "final_top1": float(rows[-1]["eval_top1"]),
        "model": cfg.model, "spike_mode": cfg.spike_mode, "v_threshold": cfg.v_threshold, "seed": cfg.seed,
    }
    if eval_name == "val":
        test_loader = build_eval_loader(cfg, build_test_dataset(cfg), device=device)
        single, encoder = DistInfo(), build_encoder(cfg, training=False)
        results["final_test_top1"] = evaluate(model, test_loader, device, dist=single, amp=cfg.amp,
                                              encoder=encoder)["eval_top1"]
        ckpt_io.load_checkpoint(model, run_dir / "best.pth.tar")
        results["best_test_top1"] = evaluate(model, test_loader, device, dist=single, amp=cfg.amp,
                                             encoder=encoder)["eval_top1"]
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2))
    log.info("done: best %s top1 %.2f at epoch %d, final %.2f | %s", eval_name, results["best_top1"],
             results["best_epoch"], results["final_top1"], run_dir)
    return results
