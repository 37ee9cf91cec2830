"""The training recipe from timm's factories: optimizer, schedule, mixup and the matching loss."""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..config import Config
from ..errors import ConfigError
from .loop import TETLoss


def build_optimizer_and_scheduler(cfg: Config, model: torch.nn.Module, fused: bool = False):
    """timm's factories: AdamW without decay on biases and norm weights; cosine with warm-up and cooldown.
    ``fused``: torch's fused optimizer kernel (``Runtime.fused_optimizer``).

    ``warmup_prefix=False`` makes the cosine run on the absolute epoch, as in the study:
    ``lr(t) = min_lr + (lr - min_lr)(1 + cos(pi t / epochs)) / 2`` for ``warmup <= t < epochs``.
    """
    try:
        # None: the optimizer's own default, as timm's train.py leaves it (LAMB's eps is 1e-6, not AdamW's 1e-8)
        given = dict(betas=None if cfg.opt_betas is None else tuple(cfg.opt_betas), eps=cfg.opt_eps,
                     fused=True if fused else None)
        optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        **{k: v for k, v in given.items() if v is not None})
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"optimizer {cfg.opt!r} cannot be built: {e}") from None
    try:
        scheduler, total_epochs = create_scheduler_v2(
            optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr,
            warmup_epochs=cfg.warmup_epochs, cooldown_epochs=cfg.cooldown_epochs, warmup_prefix=False,
        )
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"scheduler {cfg.sched!r} cannot be built: {e}") from None
    if scheduler is None:
        raise ConfigError(f"unknown scheduler {cfg.sched!r}; try cosine, step, plateau, poly or tanh")
    return optimizer, scheduler, total_epochs


def make_mixup_and_loss(cfg: Config, mixup_on: bool, device: torch.device):
    """timm's Mixup (label smoothing inside it when on) and the matching loss, as timm's train.py pairs
    them; with TET the loss averages the per-step losses and adds TET's regulariser."""
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
    return mixup, TETLoss(loss, cfg.tet_means, cfg.tet_lamb) if cfg.tet else loss
