"""The ranker's knob schema and the typed config trainers read.

The defaults are the *baseline*: a plain, modest MLP with no explicit feature crosses, so
there is headroom for the agent to find (wider embeddings, DCN-v2, FM, better optimisers).
This module is imported by the planner, so it must stay free of torch and data loading.
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
            name="embedding_dim", role=Role.EMBEDDING_DIM, type="int", low=4, high=64, log=True, default=8,
            technique="embedding_dim", description="Width of every sparse feature's embedding vector.",
        ),
        Knob(
            name="hash_buckets", role=Role.HASH_BUCKETS, type="int", low=0, high=1_000_000, default=0,
            technique="embedding_hashing",
            description="Rows per embedding table when hashing ids of larger fields; 0 keeps exact ids.",
        ),
        Knob(
            name="mlp_width", role=Role.MLP_WIDTH, type="int", low=16, high=512, log=True, default=64,
            technique="mlp_capacity", description="Units in each hidden layer of the MLP.",
        ),
        Knob(
            name="mlp_depth", role=Role.MLP_DEPTH, type="int", low=1, high=4, default=2,
            technique="mlp_capacity", description="Number of hidden layers in the MLP.",
        ),
        Knob(
            name="cross_layers", role=Role.CROSS_LAYERS, type="int", low=0, high=4, default=0,
            technique="dcn_v2", description="DCN-v2 cross layers stacked before the MLP; 0 disables them.",
        ),
        Knob(
            name="cross_rank", role=Role.CROSS_RANK, type="int", low=0, high=64, default=0,
            technique="dcn_v2_low_rank",
            description="Rank of each cross layer's weight matrix; 0 means full rank.",
        ),
        Knob(
            name="fm", role=Role.FM_TERM, type="bool", default=False,
            technique="fm_interaction",
            description="Add a factorisation-machine pairwise interaction term to the logit.",
        ),
        Knob(
            name="dropout", role=Role.DROPOUT, type="float", low=0.0, high=0.5, default=0.0,
            technique="dropout", description="Dropout probability after each hidden MLP layer.",
        ),
        Knob(
            name="weight_decay", role=Role.WEIGHT_DECAY, type="float", low=0.0, high=0.01, default=0.0,
            technique="l2_regularisation",
            description="Weight decay on dense (non-embedding) parameters; decoupled for adamw.",
        ),
        Knob(
            name="embedding_l2", role=Role.EMBEDDING_L2, type="float", low=0.0, high=0.001, default=0.0,
            technique="l2_regularisation",
            description="L2 penalty on the embeddings looked up in each batch.",
        ),
        Knob(
            name="learning_rate", role=Role.LEARNING_RATE, type="float", low=1e-4, high=0.05, log=True,
            default=1e-3,
            technique="learning_rate", description="Peak learning rate of the optimiser.",
        ),
        Knob(
            name="optimizer", role=Role.OPTIMIZER, type="categorical",
            choices=["adam", "adamw", "adagrad", "sgd"],
            default="adam", technique="optimizer",
            description="Optimiser for the dense parameters, and the embeddings' where "
            "embedding_optimizer is dense (sgd uses momentum 0.9).",
        ),
        Knob(
            name="embedding_optimizer", role=Role.EMBEDDING_OPTIMIZER, type="categorical",
            choices=["dense", "adagrad", "rowwise_adagrad", "sparse_adam"],
            default="dense", technique="embedding_optimizer",
            description="How the embedding tables train: with the optimizer knob's optimiser on "
            "dense gradients, or on sparse ones (only the rows a batch touched) with Adagrad, "
            "row-wise Adagrad (one sum per row) or lazy Adam.",
        ),
        Knob(
            name="batch_size", role=Role.BATCH_SIZE, type="int", low=32, high=4096, log=True, default=256,
            technique="batch_size", description="Training examples per optimiser step.",
        ),
        Knob(
            name="lr_schedule", role=Role.LR_SCHEDULE, type="categorical",
            choices=["constant", "cosine", "warmup_cosine"],
            default="constant", technique="lr_schedule",
            description="Learning-rate schedule over all steps; warmup_cosine warms up for 5% of them.",
        ),
        Knob(
            name="grad_clip", role=Role.GRAD_CLIP, type="float", low=0.0, high=10.0, default=0.0,
            technique="gradient_clipping", description="Maximum global gradient norm; 0 disables clipping.",
        ),
        Knob(
            name="layer_norm", role=Role.NORMALISATION, type="bool", default=False,
            technique="normalisation", description="Apply LayerNorm after each hidden MLP layer.",
        ),
        Knob(
            name="epochs", role=Role.EPOCHS, type="int", low=1, high=30, default=3,
            technique="fidelity", description="Passes over the training split.",
        ),
        Knob(
            name="data_fraction", role=Role.DATA_FRACTION, type="float", low=0.05, high=1.0, default=1.0,
            technique="fidelity",
            description="Fraction of the training split used (a fixed, nested subsample).",
        ),
        Knob(
            name="use_evolved_kernels", role=Role.EVOLVED_KERNELS, type="bool", default=False,
            technique="evolved_kernels",
            description="Run the kernel registry's kernels for this device where it has them (PyTorch "
            "elsewhere); same metrics within float tolerance.",
        ),
    ]
)
# fmt: on


@dataclass(frozen=True)
class RankerConfig:
    """A complete, validated ranker config; one attribute per knob so trainers are type-checked."""

    embedding_dim: int
    hash_buckets: int
    mlp_width: int
    mlp_depth: int
    cross_layers: int
    cross_rank: int
    fm: bool
    dropout: float
    weight_decay: float
    embedding_l2: float
    learning_rate: float
    optimizer: str
    embedding_optimizer: str
    batch_size: int
    lr_schedule: str
    grad_clip: float
    layer_norm: bool
    epochs: int
    data_fraction: float
    use_evolved_kernels: bool

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any]) -> RankerConfig:
        """The baseline updated with ``overrides``; raises ValueError naming every bad knob."""
        return cls(**SCHEMA.resolve(overrides))
