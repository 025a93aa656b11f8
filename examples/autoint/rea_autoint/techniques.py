"""AutoInt's own techniques, ranked by REA beside its catalogue.

They name this workload's knobs where no role exists (``residual``) and roles where one does,
so they read the same as the catalogue's entries. Torch-free: the hypothesis service imports
them with the workload object.
"""

from __future__ import annotations

from rea.knobs import Role
from rea.techniques import Baseline, Changes, Technique

AUTOINT_PAPER = (
    "Song et al., AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks "
    "(CIKM 2019)"
)
MAX_HEADS = 8
MAX_BLOCKS = 4


def _attends(base: Baseline) -> bool:
    return bool(base[Role.ATTENTION_LAYERS])


def _residual_off(base: Baseline) -> bool:
    return _attends(base) and not base.config["residual"]


def _more_heads(base: Baseline) -> Changes:
    return {
        Role.ATTENTION_HEADS: min(MAX_HEADS, base[Role.ATTENTION_HEADS] * 2),
        Role.ATTENTION_LAYERS: min(MAX_BLOCKS, max(2, base[Role.ATTENTION_LAYERS])),
    }


def _can_widen(base: Baseline) -> bool:
    return base[Role.ATTENTION_HEADS] < MAX_HEADS


TECHNIQUES: tuple[Technique, ...] = (
    Technique(
        "autoint_residual",
        "Residual connections around the interacting layers",
        "autoint_residual",
        lambda base: {"residual": True},
        "attention layers must keep each field's own (first-order) signal while learning crosses, "
        "or stacked layers train slowly",
        0.006,
        f"{AUTOINT_PAPER}; He et al., Deep Residual Learning for Image Recognition (2016)",
        signals=frozenset({"underfitting", "slow_convergence"}),
        condition=_residual_off,
    ),
    Technique(
        "autoint_more_heads",
        "Twice the attention heads, and at least two interacting layers",
        "autoint_attention",
        _more_heads,
        "feature interactions matter: more heads attend to different field pairs, a second "
        "layer composes them into higher-order crosses",
        0.008,
        f"{AUTOINT_PAPER}; Vaswani et al., Attention Is All You Need (2017)",
        signals=frozenset({"interactions", "underfitting"}),
        condition=_can_widen,
    ),
)
