"""A training run, top to bottom: config -> data -> model -> epochs -> run folder.

The run folder's files are described in ``run_folder``; which checkpoint and
settings a resumed run continues with, in ``resume``.

Reproducibility: the sampler orders data from (seed, epoch), each image's
augmentation is seeded from (seed, epoch, index) (``data``), and every epoch
reseeds the main process's generators from (seed, epoch, rank), so a run
resumed from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..analysis import learned_settings
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
from .loop import FP16_NEEDS_CUDA, EpochState, StopRequested, evaluate, train_one_epoch
from .progress import EpochProgress, log_epoch
from .recipe import build_optimizer_and_scheduler, build_teacher, make_mixup_and_loss, warn_schedule
from .recorder import SpikeRecorder, neuron_layers
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
    held: list = []
    try:
        return _train(cfg, plan, dist, device, command_hint, overwrite, resume_command, held, schedule_warning)
    finally:
        for lock in held:
            lock.release()
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


def _train(cfg: Config, plan: ResumePlan, dist: DistInfo, device: torch.device, command_hint: str,
           overwrite: bool, resume_command: Optional[str], held: list, schedule_warning: bool = True) -> Path:
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(FP16_NEEDS_CUDA)
    if cfg.model_settings().get("kd") and cfg.teacher is None:
        raise ConfigError(KD_NEEDS_A_TEACHER)
    if cfg.log_wandb:
        check_wandb()
    run_dir = plan.run_dir or (Path(cfg.output) if cfg.output else default_run_dir(cfg))
    # A new run never writes into another run's folder; with --overwrite the old one is moved aside.
    replacing = plan.run_dir is None and holds_run(run_dir)
    if replacing and not overwrite:
        refuse_if_holds_run(run_dir, command_hint)

    def resume_hint(checkpoint: Path) -> str:
        return resume_command or f"{command_hint} --resume {shlex.quote(str(checkpoint))}"

    runtime = Runtime.resolve(cfg, device, dist)  # every "auto" of the config, decided once
    seed_everything(cfg.seed)
    splits = build_datasets(cfg)
    train_loader = build_train_loader(cfg, splits.train, dist.rank, dist.world, device, workers=runtime.workers,
                                      channels_last=runtime.channels_last)
    eval_loader = build_eval_loader(cfg, splits.eval, dist.rank, dist.world, device, workers=runtime.workers,
                                    channels_last=runtime.channels_last)
    train_encoder, eval_encoder = build_encoder(cfg, training=True), build_encoder(cfg, training=False)

    model = place_model(cfg, runtime)
    teacher = build_teacher(cfg, device) if cfg.teacher is not None else None
    steps_per_epoch = len(train_loader)
    optimizer, scheduler, total_epochs = build_optimizer_and_scheduler(cfg, model, fused=runtime.fused_optimizer,
                                                                       updates_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None

    start_epoch, epoch_state, best = 0, EpochState(), {"eval_top1": None, "epoch": None}
    resume_rng, mismatched = None, []
    if plan.checkpoint is not None:  # a checkpoint of another shape is refused here, before any folder changes
        mismatched = [] if plan.full else ckpt_io.settings_mismatch(model, plan.contents)
        ckpt = ckpt_io.load_into(model, plan.contents, plan.checkpoint, check_settings=plan.full,
                                 new_heads=not plan.full)
        if plan.full:
            optimizer.load_state_dict(ckpt["optimizer"])
            if not plan.replans_schedule:  # else the new length's schedule, built above, is the one to follow
                scheduler.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            start_epoch = int(ckpt["epoch"])
            epoch_state = EpochState(**ckpt.get("epoch_state", {}))
            best = ckpt.get("best", best)
            resume_rng = ckpt.get("rng")

    # Everything that can fail on bad input has run: only now create the run folder.
    moved_to = None
    if dist.is_main:
        moved_to = move_aside(run_dir) if replacing else None
        held.append(prepare_run_dir(run_dir))  # the folder's lock, released by train() when the run ends
    barrier(dist)
    setup_logging(run_dir, dist.is_main)
    if moved_to is not None:
        log.info("moved the run that was in %s to %s (--overwrite)", run_dir, moved_to)
    if plan.full:
        log.info("resuming %s at epoch %d, step %d", plan.checkpoint, start_epoch, epoch_state.step)
        for change in describe_changes(plan):
            log.info("resume: %s", change)
        last = run_dir / "last.pth.tar"
        if dist.is_main and Path(plan.checkpoint).resolve() != last.resolve() and is_behind(last, plan.contents):
            # A stop between an improving epoch's best and last writes leaves best the newer;
            # last.pth.tar must hold the state the run continues from (and, finished, its final state).
            ckpt_io.save_checkpoint(last, plan.contents)
    elif plan.checkpoint is not None:
        log.info("loaded weights from %s (optimizer and schedule start fresh)", plan.checkpoint)
        if mismatched:
            log.info("those weights were trained with other settings: %s", "; ".join(mismatched))

    log.info(runtime.describe(cfg))
    log.info("neurons: %s; evaluation images %s", describe_neuron_path(model, runtime),
             "used as stored, a batch per lookup" if splits.eval.transform is None else "transformed one by one")
    if train_encoder is not None:
        evaluation = ("evaluation batches alike" if eval_encoder is not None
                      else "evaluation on the analogue image (encode_eval false)")
        log.info("input encoding %s: training batches after mixup, %s", train_encoder.describe(), evaluation)
    train_model = compile_model(cfg, model, runtime)
    # the per-epoch evaluation runs the compiled model too: its neurons count their spikes inside the graph
    eval_model = train_model
    if dist.enabled:
        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    summary = SummaryCSV(run_dir / "summary.csv")
    scalars, curves = None, RunCurves(run_dir)
    if dist.is_main:
        save_config(cfg, run_dir / "config.yaml")
        summary.keep_before(start_epoch)
        scalars = ScalarLog(run_dir, start_epoch, wandb_config=cfg.to_dict() if cfg.log_wandb else None)
    log.info("run folder %s | %s | %s | %s mode u_th=%g | %d train / %d %s images | %s | %d parameters",
             run_dir, cfg.dataset, cfg.model, cfg.spike_mode, cfg.v_threshold, len(splits.train), len(splits.eval),
             splits.eval_name, device, sum(p.numel() for p in model.parameters()))
    if schedule_warning and dist.is_main:  # after every check of the input: an error is never preceded by it
        warn_schedule(cfg, log)

    def payload(epoch: int, state: EpochState, rng: Optional[dict] = None) -> dict:
        return {
            "epoch": epoch, "step": state.step, "epoch_state": vars(state).copy(),
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "config": cfg.to_dict(), "model_args": cfg.model_kwargs(),
            "best": best, "eval_set": splits.eval_name, "rng": rng,
        }

    stop = StopFlag()
    # the epochs' checkpoints are written while the next epoch trains; each stop waits for them
    writer = CheckpointWriter()

    def stopped(epoch: int, state: EpochState) -> RunStopped:
        """Save where the run stopped (with every generator's state, so it continues exactly)."""
        path = run_dir / "last.pth.tar"
        if dist.is_main:
            writer.save(payload(epoch, state, rng_state()), path)
            writer.wait()
            log.warning("stopped at epoch %d, step %d; checkpoint saved to %s", epoch, state.step, path)
            log.warning("resume with: %s", resume_hint(path))
        return RunStopped(128 + (stop.signal or signal.SIGINT), f"training interrupted; resume with: {resume_hint(path)}")

    try:
        with writer, stop.installed():
            for epoch in range(start_epoch, total_epochs):
                started = time.perf_counter()
                # a mid-epoch resume starts the sampler where the run stopped
                train_loader.sampler.set_epoch(epoch, skip=epoch_state.step * cfg.batch_size)
                batches = iter(train_loader)
                # after starting the loader, which may or may not draw a worker seed from these generators
                seed_everything(epoch_seed(cfg, epoch, dist.rank))
                if resume_rng is not None:
                    set_rng_state(resume_rng)
                    resume_rng = None
                scheduler.step(epoch)
                on_step = None
                if cfg.sched_on_updates:  # the lr of every step from its fractional epoch (a resumed epoch's too)
                    def on_step(step: int, first: int = epoch * steps_per_epoch) -> None:
                        scheduler.step_update(first + step)

                    on_step(epoch_state.step)
                lr = optimizer.param_groups[0]["lr"]
                mixup_on = (cfg.mixup > 0 or cfg.cutmix > 0) and (cfg.mixup_off_epoch == 0 or epoch < cfg.mixup_off_epoch)
                mixup, loss_fn = make_mixup_and_loss(cfg, mixup_on, device, teacher)
                progress = EpochProgress(epoch, len(train_loader), epoch_state.step, lr, cfg.log_interval, dist.world,
                                         show_bar=dist.is_main and sys.stderr.isatty())
                try:
                    stats = train_one_epoch(
                        train_model, batches, optimizer, loss_fn, device, epoch=epoch, dist=dist, mixup=mixup,
                        amp=cfg.amp, scaler=scaler, clip_grad=cfg.clip_grad, channels_last=runtime.channels_last,
                        nonfinite=cfg.nonfinite, sync_every=10,
                        log_every=cfg.log_interval, state=epoch_state, cuda_graphs=runtime.cuda_graphs,
                        stop_requested=stop, on_sync=progress, on_step=on_step, encoder=train_encoder,
                    )
                except StopRequested:
                    raise stopped(epoch, epoch_state) from None
                except DataError as e:  # a sample that cannot be read: save the epoch so far, say which file
                    stopped(epoch, epoch_state)
                    raise DataError(f"{user_message(e)}; the run saved where it stopped (epoch {epoch}, step "
                                    f"{epoch_state.step}): fix the file, then resume with: {resume_hint(run_dir / 'last.pth.tar')}") from None
                finally:
                    progress.close()
                train_seconds = time.perf_counter() - started

                recorder = SpikeRecorder(eval_model)
                try:
                    metrics = evaluate(eval_model, eval_loader, device, dist=dist, amp=cfg.amp,
                                       channels_last=runtime.channels_last, recorders=(recorder,), stop_requested=stop,
                                       cuda_graphs=runtime.cuda_graphs, encoder=eval_encoder)
                except StopRequested:  # the epoch's training is saved whole; the resumed run evaluates it
                    raise stopped(epoch, epoch_state) from None
                except DataError as e:
                    stopped(epoch, epoch_state)
                    raise DataError(f"{user_message(e)}; the run saved its epoch {epoch} before evaluating it: fix the "
                                    f"file, then resume with: {resume_hint(run_dir / 'last.pth.tar')}") from None
                per_step, mean_rate = recorder.firing_rates(dist)
                rates = {name: float(r.mean()) for name, r in per_step.items()}
                row = {
                    "epoch": epoch, "lr": lr, "train_loss": stats["train_loss"],
                    "eval_loss": metrics["eval_loss"], "eval_top1": metrics["eval_top1"], "eval_top5": metrics["eval_top5"],
                    "train_seconds": round(train_seconds, 3), "epoch_seconds": round(time.perf_counter() - started, 3),
                    # this process's share of the epoch: after a mid-epoch resume, the steps trained since
                    "images_per_s": round(stats["images_this_call"] / max(train_seconds, 1e-9), 1),
                    "mean_firing_rate": "" if mean_rate is None else mean_rate,
                }
                improved = best["eval_top1"] is None or metrics["eval_top1"] > best["eval_top1"]
                if improved:
                    best = {"eval_top1": metrics["eval_top1"], "epoch": epoch}
                epoch_state = EpochState()
                if dist.is_main:
                    summary.append(row)
                    log_epoch(scalars, row, rates, mean_rate, learned_settings(model), stats, mixup_on, splits.eval_name)
                    # best first: a kill between the two leaves best the newer, which a resume detects
                    paths = [run_dir / "best.pth.tar"] if improved else []
                    writer.save(payload(epoch + 1, epoch_state), *paths, run_dir / "last.pth.tar")
                    # while the checkpoints are written
                    curves.update(final=epoch + 1 == total_epochs or (not dist.enabled and stop()))
                barrier(dist)
                if not dist.enabled and stop() and epoch + 1 < total_epochs:
                    # last.pth.tar, just saved, already holds this point: the next epoch reseeds from (seed, epoch)
                    writer.wait()
                    path = run_dir / "last.pth.tar"
                    log.warning("stopped after epoch %d; resume with: %s", epoch, resume_hint(path))
                    raise RunStopped(128 + (stop.signal or signal.SIGINT), f"training interrupted; resume with: {resume_hint(path)}")
        if dist.is_main:
            scalars.close(write_results(cfg, run_dir, model, device, dist, splits.eval_name))
            scalars = None
    except KeyboardInterrupt:  # a second Ctrl-C, or one while the results are written: stop now, without saving
        found, ckpt = newest_checkpoint(run_dir) if dist.is_main else (None, None)
        if found is None:
            raise RunStopped(130, "stopped at once (Ctrl-C) before the first checkpoint: nothing was saved") from None
        raise RunStopped(130, f"stopped at once (Ctrl-C); what was trained since the last checkpoint is lost; "
                              f"last checkpoint: {describe_progress(ckpt)} ({found})\nresume with: {resume_hint(found)}") from None
    finally:
        if scalars is not None:  # a stopped run's logs end where it stopped; its resume appends to them
            scalars.close()

    barrier(dist)
    return run_dir


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
