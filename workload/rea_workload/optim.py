"""Optimisers and learning-rate schedules named by the ``optimizer`` and ``lr_schedule`` knobs."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from rea_workload.model import RankerModel
from rea_workload.schema import RankerConfig

WARMUP_SHARE = 0.05
SGD_MOMENTUM = 0.9


def build_optimizer(model: RankerModel, config: RankerConfig) -> torch.optim.Optimizer:
    """Weight decay applies to dense parameters only; embeddings have their own L2 knob."""
    groups = [
        {"params": model.embedding_parameters(), "weight_decay": 0.0},
        {"params": model.dense_parameters(), "weight_decay": config.weight_decay},
    ]
    lr = config.learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def build_schedule(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int) -> LambdaLR:
    """A per-step multiplier of the peak learning rate."""
    warmup = max(1, round(WARMUP_SHARE * total_steps)) if schedule == "warmup_cosine" else 0

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    if schedule not in ("constant", "cosine", "warmup_cosine"):
        raise ValueError(f"unknown lr_schedule {schedule!r}")
    return LambdaLR(optimizer, factor)
