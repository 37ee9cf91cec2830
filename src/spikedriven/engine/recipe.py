"""The training recipe from timm's factories: optimizer, schedule, mixup and the matching loss; a teacher and
its distillation loss where the model has a distillation head."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..config import Config
from ..errors import ConfigError
from .loop import DistillationLoss, TETLoss


def build_optimizer_and_scheduler(cfg: Config, model: torch.nn.Module, fused: bool = False,
                                  updates_per_epoch: int = 0):
    """timm's factories: AdamW without decay on biases and norm weights; cosine with warm-up and cooldown.
    ``fused``: torch's fused optimizer kernel (``Runtime.fused_optimizer``).

    By default the cosine runs on the absolute epoch, as in the study:
    ``lr(t) = min_lr + (lr - min_lr)(1 + cos(pi t / epochs)) / 2`` for ``warmup <= t < epochs``. With
    ``warmup_prefix`` it starts after the warm-up and spans the rest, as MAE-style recipes (SDT-V2, -V3):
    ``(1 + cos(pi (t - warmup) / (epochs - warmup))) / 2``, so timm is given ``epochs - warmup`` epochs of
    cosine after its prefix. With ``sched_on_updates`` t is the fractional epoch, set at every step
    (``scheduler.step_update``; ``updates_per_epoch``: the loader's batches), else the epoch.
    """
    try:
        # None: the optimizer's own default, as timm's train.py leaves it (LAMB's eps is 1e-6, not AdamW's 1e-8)
        given = dict(betas=None if cfg.opt_betas is None else tuple(cfg.opt_betas), eps=cfg.opt_eps,
                     fused=True if fused else None)
        optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        **{k: v for k, v in given.items() if v is not None}, **cfg.opt_kwargs)
    except TypeError as e:  # an opt_kwargs key the optimizer does not take
        raise ConfigError(f"optimizer {cfg.opt!r} cannot be built with opt_kwargs {cfg.opt_kwargs}: {e}") from None
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"optimizer {cfg.opt!r} cannot be built: {e}") from None
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=cfg.sched, num_epochs=cfg.epochs - (cfg.warmup_epochs if cfg.warmup_prefix else 0),
            min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs,
            cooldown_epochs=cfg.cooldown_epochs, warmup_prefix=cfg.warmup_prefix,
            step_on_epochs=not cfg.sched_on_updates, updates_per_epoch=updates_per_epoch,
        )
    except (ValueError, AssertionError) as e:
        why = str(e) or f"timm refused {cfg.epochs} epochs with {cfg.warmup_epochs} of warm-up"
        raise ConfigError(f"scheduler {cfg.sched!r} cannot be built: {why}") from None
    if scheduler is None:
        raise ConfigError(f"unknown scheduler {cfg.sched!r}; try cosine, step, plateau, poly or tanh")
    return optimizer, scheduler, cfg.total_epochs


def schedule_warning(cfg: Config) -> Optional[str]:
    """One line when the run stops before its recipe does what it is there for: it ends inside its warm-up
    (it never trains at ``lr``, only on the warm-up's ramp), or mixup is on and never switches off
    (``mixup_off_epoch`` is at or after the last epoch); None when neither."""
    problems = []
    if cfg.warmup_epochs > 0 and cfg.epochs <= cfg.warmup_epochs:
        problems.append(f"the run ends inside its warm-up (epochs {cfg.epochs}, warmup_epochs {cfg.warmup_epochs}): "
                        f"it trains only on the ramp from warmup_lr {cfg.warmup_lr:g}, never at lr {cfg.lr:g}; give "
                        "more epochs or fewer warmup_epochs")
    mixup = cfg.mixup > 0 or cfg.cutmix > 0
    if mixup and cfg.mixup_off_epoch > 0 and cfg.total_epochs <= cfg.mixup_off_epoch:
        problems.append(f"mixup never switches off: mixup_off_epoch {cfg.mixup_off_epoch} is at or after the run's "
                        f"{cfg.total_epochs} epochs; lower it below {cfg.total_epochs}, or set it to 0 to keep mixup "
                        "on throughout on purpose")
    return "; and ".join(problems) or None


def warn_schedule(cfg: Config, logger: Optional[logging.Logger] = None,
                  prefix: str = "warning: ") -> Optional[str]:
    """Log ``schedule_warning``, if any, before training starts; returns it."""
    text = schedule_warning(cfg)
    if text:
        (logger or logging.getLogger("spikedriven")).warning("%s%s", prefix, text)
    return text


def build_teacher(cfg: Config, device: torch.device) -> torch.nn.Module:
    """The distillation teacher: timm's model ``cfg.teacher`` with the weights of ``cfg.teacher_checkpoint``
    (timm reads a model's original checkpoint through its own filter, so a published .pth loads as it is), in
    evaluation mode and frozen; one sentence for a name timm does not know or weights that do not fit."""
    import timm

    path = Path(cfg.teacher_checkpoint)
    if not path.is_file():
        raise ConfigError(f"teacher_checkpoint {path} does not exist or is not a file")
    if not timm.is_model(cfg.teacher):
        raise ConfigError(f"teacher {cfg.teacher!r} is not a timm model name (timm.list_models lists them)")
    try:
        teacher = timm.create_model(cfg.teacher, pretrained=True, num_classes=cfg.num_classes,
                                    pretrained_cfg_overlay=dict(file=str(path), num_classes=cfg.num_classes))
    except (RuntimeError, KeyError, ValueError) as e:
        raise ConfigError(f"teacher {cfg.teacher} cannot load {path}: {str(e).splitlines()[0]}") from None
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def make_mixup_and_loss(cfg: Config, mixup_on: bool, device: torch.device,
                        teacher: Optional[torch.nn.Module] = None):
    """timm's Mixup (label smoothing inside it when on) and the matching loss, as timm's train.py pairs
    them; with TET the loss averages the per-step losses and adds TET's regulariser; with a ``teacher`` the
    model's distillation head learns its predictions beside (``DistillationLoss``)."""
    mixup = None
    if mixup_on:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode,
                      label_smoothing=cfg.smoothing, num_classes=cfg.num_classes)
    if cfg.bce_loss:
        loss = BinaryCrossEntropy(smoothing=0.0 if mixup_on else cfg.smoothing, target_threshold=cfg.bce_target_thresh)
    elif mixup_on:
        loss = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        loss = LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    else:
        loss = torch.nn.CrossEntropyLoss()
    loss = TETLoss(loss, cfg.tet_means, cfg.tet_lamb) if cfg.tet else loss
    if teacher is not None:
        loss = DistillationLoss(loss, teacher, cfg.distillation_type, cfg.distillation_alpha, cfg.distillation_tau)
    return mixup, loss
