"""A curated catalogue of ranking-model techniques, written against knob roles.

Every entry says what it changes (as a function of the baseline, so "raise the learning rate
3x" means 3x *this* baseline's learning-rate knob, whatever the workload calls it), when it
tends to help, a prior effect estimate (relative NE reduction) and where the idea comes from.
A technique binds to any workload that declares the roles it needs (:mod:`rea.techniques`).
"""

from __future__ import annotations

from collections.abc import Callable

from rea.knobs import Role
from rea.techniques import Baseline, Changes, Technique, scaled

SIGNALS = {
    "interactions": "feature crosses carry signal the MLP does not pick up",
    "underfitting": "train and validation loss both high and close together",
    "overfitting": "validation loss well above training loss, or rising late",
    "instability": "loss spikes, gradient-norm spikes or NaNs",
    "slow_convergence": "loss still falling steadily when training ends",
    "sparse_features": "many rare ids that get few updates",
}


def _crosses(layers: int, rank: int | None) -> Callable[[Baseline], Changes]:
    """Cross layers, and their rank where the workload has a rank knob (full rank when None)."""

    def change(base: Baseline) -> Changes:
        if Role.CROSS_RANK not in base:
            return {Role.CROSS_LAYERS: layers}
        return {Role.CROSS_LAYERS: layers, Role.CROSS_RANK: base[Role.CROSS_RANK] if rank is None else rank}

    return change


CATALOGUE: tuple[Technique, ...] = (
    Technique(
        "dcn_v2",
        "Explicit feature crosses with DCN-v2",
        "dcn_v2",
        _crosses(2, 0),
        "feature interactions matter and the MLP alone under-fits them",
        0.012,
        "Wang et al., DCN V2: Improved Deep & Cross Network and Practical Lessons (2021)",
        signals=frozenset({"interactions", "underfitting"}),
    ),
    Technique(
        "dcn_v2_low_rank",
        "Low-rank DCN-v2 cross layers",
        "dcn_v2_low_rank",
        _crosses(2, 16),
        "crosses help but full-rank cross layers over-fit or cost too much",
        0.010,
        "Wang et al., DCN V2: Improved Deep & Cross Network and Practical Lessons (2021)",
        signals=frozenset({"interactions", "overfitting"}),
    ),
    Technique(
        "fm",
        "Factorization-machine pairwise interactions",
        "fm_interaction",
        lambda base: {Role.FM_TERM: True},
        "sparse categorical features with pairwise effects",
        0.008,
        "Rendle, Factorization Machines (2010); Guo et al., DeepFM (2017)",
        signals=frozenset({"interactions", "sparse_features"}),
    ),
    Technique(
        "embedding_dim_2x",
        "Double the embedding dimension",
        "embedding_dim",
        scaled(Role.EMBEDDING_DIM, 2, as_int=True),
        "under-fitting on high-cardinality features",
        0.006,
        "Naumov et al., Deep Learning Recommendation Model (DLRM) (2019)",
        signals=frozenset({"underfitting", "sparse_features"}),
    ),
    Technique(
        "learning_rate_3x",
        "Raise the learning rate 3x",
        "learning_rate",
        scaled(Role.LEARNING_RATE, 3.0),
        "training loss still falling steadily at the end of the budget",
        0.006,
        "Smith, Cyclical Learning Rates for Training Neural Networks (2017)",
        signals=frozenset({"slow_convergence"}),
    ),
    Technique(
        "adagrad",
        "Adagrad (per-coordinate rates suit sparse embeddings)",
        "optimizer",
        lambda base: {Role.OPTIMIZER: "adagrad", Role.LEARNING_RATE: base[Role.LEARNING_RATE] * 10},
        "rare features get too few updates under a global learning rate",
        0.005,
        "Duchi et al., Adaptive Subgradient Methods for Online Learning (2011); McMahan et al., "
        "Ad Click Prediction: a View from the Trenches (2013)",
        signals=frozenset({"sparse_features", "slow_convergence"}),
    ),
    Technique(
        "wider_mlp",
        "Wider MLP tower",
        "mlp_capacity",
        scaled(Role.MLP_WIDTH, 2, as_int=True),
        "under-fitting: train and validation loss both high",
        0.004,
        "Covington et al., Deep Neural Networks for YouTube Recommendations (2016)",
        signals=frozenset({"underfitting"}),
    ),
    Technique(
        "dropout",
        "Dropout in the MLP",
        "dropout",
        lambda base: {Role.DROPOUT: 0.2},
        "over-fitting: validation loss rises while training loss falls",
        0.003,
        "Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting (2014)",
        signals=frozenset({"overfitting"}),
    ),
    Technique(
        "weight_decay",
        "L2 weight decay",
        "l2_regularisation",
        # PyTorch's AdamW default. Decoupled decay shrinks each weight by lr * wd per step; at
        # 1e-5 with a 1e-3 learning rate that factor rounds to 1 in float32 and trains nothing.
        lambda base: {Role.WEIGHT_DECAY: 1e-2, Role.OPTIMIZER: "adamw"},
        "over-fitting on dense weights",
        0.003,
        "Loshchilov & Hutter, Decoupled Weight Decay Regularization (2019)",
        signals=frozenset({"overfitting"}),
    ),
    Technique(
        "cosine_schedule",
        "Cosine learning-rate decay with warm-up",
        "lr_schedule",
        lambda base: {Role.LR_SCHEDULE: "warmup_cosine"},
        "loss plateaus noisily at the end of training",
        0.003,
        "Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts (2017)",
        signals=frozenset({"instability", "slow_convergence"}),
    ),
    Technique(
        "layer_norm",
        "Layer normalisation in the MLP",
        "normalisation",
        lambda base: {Role.NORMALISATION: True},
        "unstable or slow optimisation of deeper towers",
        0.002,
        "Ba et al., Layer Normalization (2016)",
        signals=frozenset({"instability"}),
    ),
    Technique(
        "batch_lr_scaling",
        "Larger batch with linearly scaled learning rate",
        "batch_size",
        lambda base: {
            Role.BATCH_SIZE: base[Role.BATCH_SIZE] * 2,
            Role.LEARNING_RATE: base[Role.LEARNING_RATE] * 2,
        },
        "throughput-bound training where larger batches are cheaper per sample",
        0.002,
        "Goyal et al., Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour (2017)",
        signals=frozenset({"instability"}),
    ),
    Technique(
        "small_batch",
        "Smaller batches: more optimiser steps for the same data",
        "batch_size",
        lambda base: {Role.BATCH_SIZE: base[Role.BATCH_SIZE] // 4},
        "a short training budget (few epochs) ends before the model converges",
        0.006,
        "Masters and Luschi, Revisiting Small Batch Training for Deep Neural Networks (2018)",
        signals=frozenset({"slow_convergence", "underfitting"}),
    ),
    Technique(
        "gradient_clipping",
        "Clip the global gradient norm",
        "gradient_clipping",
        lambda base: {Role.GRAD_CLIP: 1.0},
        "the training loss spikes or gradient norms jump between steps",
        0.002,
        "Pascanu et al., On the Difficulty of Training Recurrent Neural Networks (2013)",
        signals=frozenset({"instability"}),
    ),
    Technique(
        "learning_rate_third",
        "Lower the learning rate 3x",
        "learning_rate",
        scaled(Role.LEARNING_RATE, 1 / 3),
        "the loss is noisy or diverges, or validation NE is best in the first epoch",
        0.002,
        "Bengio, Practical Recommendations for Gradient-Based Training of Deep Architectures (2012)",
        signals=frozenset({"instability", "overfitting"}),
    ),
    Technique(
        "embedding_l2",
        "L2 penalty on the embeddings looked up",
        "l2_regularisation",
        lambda base: {Role.EMBEDDING_L2: 1e-5},
        "embeddings of rare ids over-fit: validation loss rises while training loss falls",
        0.002,
        "Koren, Bell & Volinsky, Matrix Factorization Techniques for Recommender Systems (2009)",
        signals=frozenset({"overfitting", "sparse_features"}),
    ),
    Technique(
        "deeper_mlp",
        "One more hidden layer in the MLP",
        "mlp_capacity",
        lambda base: {Role.MLP_DEPTH: base[Role.MLP_DEPTH] + 1},
        "under-fitting with enough data to fit higher-order interactions implicitly",
        0.002,
        "Cheng et al., Wide & Deep Learning for Recommender Systems (2016)",
        signals=frozenset({"underfitting", "interactions"}),
    ),
    Technique(
        "deeper_cross",
        "Three DCN-v2 cross layers (higher-order crosses)",
        "dcn_v2",
        _crosses(3, None),
        "crosses help and the planted or real interactions involve three or more features",
        0.004,
        "Wang et al., Deep & Cross Network for Ad Click Predictions (2017)",
        signals=frozenset({"interactions"}),
    ),
    Technique(
        "embedding_hashing",
        "Hash large id spaces into 2^16 buckets",
        "embedding_hashing",
        lambda base: {Role.HASH_BUCKETS: 65_536},
        "id fields with a long tail of rare values: shared buckets regularise and bound memory",
        0.001,
        "Weinberger et al., Feature Hashing for Large Scale Multitask Learning (2009)",
        signals=frozenset({"sparse_features", "overfitting"}),
    ),
    Technique(
        "sparse_embedding_adagrad",
        "Sparse Adagrad for the embedding tables (dense optimiser unchanged)",
        "embedding_optimizer",
        lambda base: {Role.EMBEDDING_OPTIMIZER: "adagrad"},
        "rare ids need their own step sizes; a step also updates only the rows its batch touched, "
        "so large tables train far faster",
        0.001,
        "Duchi et al., Adaptive Subgradient Methods for Online Learning (2011); Naumov et al., Deep "
        "Learning Recommendation Model for Personalization and Recommendation Systems (2019)",
        signals=frozenset({"sparse_features"}),
    ),
)
