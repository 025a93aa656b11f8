"""The AutoInt workload's knob schema and the typed config its trainer reads.

The knob names are this team's own; each declares the :class:`~rea.knobs.Role` it plays so
REA's techniques, runbook and cost model find it. ``residual``, ``attn_scale`` and
``init_std`` play no role: REA derives hypotheses for them from their declared type and range.

The defaults are the baseline: one single-head interacting layer without residual
connections on 8-dimensional field embeddings, so there is headroom for REA to find (the
AutoInt paper's own setup uses three layers, two heads and residual connections).
Imported by the planner, so it must stay free of torch and data loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rea.knobs import Knob, KnobSchema, Role

# Kept unformatted so each knob reads as one compact table entry.
# fmt: off
SCHEMA = KnobSchema(
    knobs=[
        Knob(
            name="field_dim", role=Role.EMBEDDING_DIM, type="int", low=4, high=64, log=True, default=8,
            technique="embedding_dim", description="Width of each field's embedding and attention head.",
        ),
        Knob(
            name="attn_blocks", role=Role.ATTENTION_LAYERS, type="int", low=0, high=4, default=1,
            technique="autoint_attention",
            description="Self-attention interacting layers over the field embeddings; 0 disables them.",
        ),
        Knob(
            name="attn_heads", role=Role.ATTENTION_HEADS, type="int", low=1, high=8, default=1,
            technique="autoint_attention", description="Attention heads per interacting layer.",
        ),
        Knob(
            name="residual", type="bool", default=False, technique="autoint_residual",
            description="Add a projected residual connection around each interacting layer.",
        ),
        Knob(
            name="attn_scale", type="categorical", choices=["dot", "scaled_dot"], default="dot",
            technique="autoint_attention",
            description="Attention scores: the paper's plain dot product, or divided by sqrt(head width).",
        ),
        Knob(
            name="init_std", type="float", low=0.001, high=0.1, log=True, default=0.01,
            technique="embedding_init", description="Standard deviation of the embeddings' initialisation.",
        ),
        Knob(
            name="tower_units", role=Role.MLP_WIDTH, type="int", low=16, high=512, log=True, default=32,
            technique="mlp_capacity",
            description="Units in the tower's one hidden layer, between the attention output and the logit.",
        ),
        Knob(
            name="drop_rate", role=Role.DROPOUT, type="float", low=0.0, high=0.5, default=0.0,
            technique="dropout",
            description="Dropout on the attention weights and the tower's hidden layer; 0 disables it.",
        ),
        Knob(
            name="l2_dense", role=Role.WEIGHT_DECAY, type="float", low=0.0, high=0.01, default=0.0,
            technique="l2_regularisation",
            description="Weight decay on non-embedding weights; decoupled for adamw, an L2 term otherwise.",
        ),
        Knob(
            name="lr", role=Role.LEARNING_RATE, type="float", low=1e-4, high=0.05, log=True, default=1e-3,
            technique="learning_rate", description="Learning rate of the optimiser (constant).",
        ),
        Knob(
            name="solver", role=Role.OPTIMIZER, type="categorical", choices=["adam", "adamw", "rmsprop"],
            default="adam", technique="optimizer", description="Optimiser for all parameters.",
        ),
        Knob(
            name="minibatch", role=Role.BATCH_SIZE, type="int", low=32, high=4096, log=True, default=256,
            technique="batch_size", description="Training examples per optimiser step.",
        ),
        Knob(
            name="clip_norm", role=Role.GRAD_CLIP, type="float", low=0.0, high=10.0, default=0.0,
            technique="gradient_clipping", description="Maximum global gradient norm; 0 disables clipping.",
        ),
        Knob(
            name="passes", role=Role.EPOCHS, type="int", low=1, high=30, default=3,
            technique="fidelity", description="Passes over the training split.",
        ),
        Knob(
            name="sample_share", role=Role.DATA_FRACTION, type="float", low=0.05, high=1.0, default=1.0,
            technique="fidelity", description="Share of the training split used (a fixed, nested prefix).",
        ),
    ]
)
# fmt: on


@dataclass(frozen=True)
class AutoIntConfig:
    """A complete, validated config; one attribute per knob so the trainer is type-checked."""

    field_dim: int
    attn_blocks: int
    attn_heads: int
    residual: bool
    attn_scale: str
    init_std: float
    tower_units: int
    drop_rate: float
    l2_dense: float
    lr: float
    solver: str
    minibatch: int
    clip_norm: float
    passes: int
    sample_share: float

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any]) -> AutoIntConfig:
        """The baseline updated with ``overrides``; raises ValueError naming every bad knob."""
        return cls(**SCHEMA.resolve(overrides))
