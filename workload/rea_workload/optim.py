"""Optimisers and learning-rate schedules named by the ``optimizer``, ``embedding_optimizer`` and
``lr_schedule`` knobs.

Dense parameters train with PyTorch's fused optimisers wherever the device has them: one kernel
per step instead of a dozen elementwise passes over every parameter and its moments, the same
update within float rounding (``python -m rea_bench.training`` measures what each choice costs).

The embedding table trains with the same optimiser by default ("dense"). A ranker's batch
touches a few per cent of its rows, so ``embedding_optimizer`` can make its gradient sparse
instead: "adagrad" is exactly Adagrad (a row without gradient has nothing to add to its sum and
does not move); "rowwise_adagrad" keeps one sum per row instead of one per weight (FBGEMM's
exact row-wise Adagrad, TorchRec's usual choice: a table's optimiser state shrinks by its
dimension); "sparse_adam" is lazy Adam (moments and updates only for the rows a batch touched,
as TensorFlow's LazyAdam). None writes a gradient or state for the rows a batch did not touch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch.optim.lr_scheduler import LambdaLR

from rea_workload.model import RankerModel
from rea_workload.schema import RankerConfig

WARMUP_SHARE = 0.05
SGD_MOMENTUM = 0.9
FUSED_DEVICES = frozenset({"cpu"})
"""Where the trainer runs and every optimiser here has a fused kernel. PyTorch checks the device
only at the first step, so an unsupported one is ruled out here rather than caught."""
CLIP_EPSILON = 1e-6  # as torch.nn.utils.clip_grad_norm_ adds to the norm


@dataclass(frozen=True)
class Optimizers:
    """The optimisers a training step runs together: the dense parameters' and, where the tables
    train on sparse gradients, the tables'."""

    each: tuple[torch.optim.Optimizer, ...]

    def zero_grad(self) -> None:
        for optimizer in self.each:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        # A sparse gradient's invariant checks are off by default; declining them explicitly
        # keeps PyTorch from warning at a sparse optimiser's first step.
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            for optimizer in self.each:
                for group in optimizer.param_groups:
                    for parameter in group["params"]:
                        if parameter.grad is not None and parameter.grad.is_sparse:
                            parameter.grad = coalesced(parameter.grad)
                optimizer.step()


def coalesced(gradient: torch.Tensor) -> torch.Tensor:
    """A sparse gradient with each row once, in order. One whose rows already are (the sparse
    lookup backward kernel's: autograd drops the mark when it stores a gradient) is marked so
    after one pass over its rows, instead of being sorted again by ``coalesce``."""
    if gradient.is_coalesced():
        return gradient
    rows = gradient._indices()
    if rows.shape[0] == 1 and bool((rows[0, 1:] > rows[0, :-1]).all()):
        return gradient._coalesced_(True)
    return gradient.coalesce()


def build_optimizers(model: RankerModel, config: RankerConfig) -> Optimizers:
    """The optimisers one training step runs. Weight decay applies to dense parameters only;
    embeddings have their own L2 knob."""
    lr = config.learning_rate
    tables = model.embedding_parameters()
    dense = {"params": model.dense_parameters(), "weight_decay": config.weight_decay}
    if config.embedding_optimizer == "dense":
        embeddings = {"params": tables, "weight_decay": 0.0}
        return Optimizers((_optimizer(config.optimizer, [embeddings, dense], lr),))
    sparse: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adagrad": lambda: torch.optim.Adagrad(tables, lr=lr),
        "rowwise_adagrad": lambda: RowwiseAdagrad(tables, lr=lr),
        "sparse_adam": lambda: torch.optim.SparseAdam(tables, lr=lr),
    }
    if config.embedding_optimizer not in sparse:
        raise ValueError(f"unknown embedding_optimizer {config.embedding_optimizer!r}")
    return Optimizers((_optimizer(config.optimizer, [dense], lr), sparse[config.embedding_optimizer]()))


class RowwiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulated square per row of a 2-d parameter: the mean of the row's
    squared gradient is added to it, and the row moves by ``lr / (sqrt(sum) + eps)`` times its
    gradient (FBGEMM's ``EXACT_ROWWISE_ADAGRAD``). A sparse gradient updates only its rows."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                gradient = parameter.grad
                if gradient.is_sparse:
                    gradient = gradient.coalesce()
                    rows, values = gradient.indices()[0], gradient.values()
                else:
                    rows, values = torch.arange(len(parameter), device=parameter.device), gradient
                state = self.state[parameter]
                if "sum" not in state:
                    state["sum"] = parameter.new_zeros(len(parameter))
                sums: torch.Tensor = state["sum"]
                sums.index_add_(0, rows, values.square().mean(dim=1))
                rates = group["lr"] / (sums[rows].sqrt() + group["eps"])
                parameter.index_add_(0, rows, values * -rates.unsqueeze(1))
        return loss


def _optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """``name``'s optimiser over ``groups``, fused where the parameters' device has it."""
    kinds: dict[str, tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]] = {
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
        "adagrad": (torch.optim.Adagrad, {}),
        "sgd": (torch.optim.SGD, {"momentum": SGD_MOMENTUM}),
    }
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}")
    kind, options = kinds[name]
    groups = [group for group in groups if group["params"]]
    fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for g in groups for p in g["params"])
    return kind(groups, lr=lr, fused=fused, **options)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """The global norm of the parameters' gradients, before any clipping; with ``max_norm`` > 0,
    every gradient is scaled down so the global norm is at most ``max_norm`` (PyTorch's
    ``clip_grad_norm_``, which has no sparse gradients: a sparse one is coalesced, and its
    values, a view, are what is measured and scaled)."""
    gradients: list[torch.Tensor] = []
    for parameter in parameters:
        if parameter.grad is None:
            continue
        if parameter.grad.is_sparse:
            parameter.grad = coalesced(parameter.grad)
            gradients.append(parameter.grad.values())
        else:
            gradients.append(parameter.grad)
    norm = torch.nn.utils.get_total_norm(gradients)
    if max_norm > 0:
        coefficient = torch.clamp(max_norm / (norm + CLIP_EPSILON), max=1.0)
        for gradient in gradients:
            gradient.mul_(coefficient)
    return float(norm)


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
