"""The ranker: embeddings -> optional DCN-v2 cross network -> MLP -> one logit, plus optional FM.

Layout (``cross_layers`` > 0 stacks the cross network *before* the MLP, as in DCN-v2's
"stacked" variant; we pick stacked because it keeps one path from input to logit, so the
baseline is simply the special case with zero cross layers)::

    x0 = [field embeddings..., dense features]
    x  = cross_L(...cross_1(x0))           # x_{l+1} = x0 * (W_l x_l + b_l) + x_l
    logit = head(MLP(x)) [+ FM(field embeddings)]

Single-valued fields use ``nn.Embedding``; multi-valued fields use ``nn.EmbeddingBag`` in
mean mode. With ``hash_buckets`` > 0, fields with more ids than that are hashed into a table
of ``hash_buckets`` rows (fields that already fit keep exact ids).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rea_workload.batches import Batch
from rea_workload.datasets.data import CtrData
from rea_workload.schema import RankerConfig

_HASH_MULTIPLIER = 2_654_435_761  # Knuth's multiplicative constant; ids < 2**31 cannot overflow int64
_EMBEDDING_STD = 0.05


class CrossLayer(nn.Module):
    """One DCN-v2 cross layer; a rank-``rank`` factorisation of W when 0 < rank < dim."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.weight: nn.Module
        if 0 < rank < dim:
            self.weight = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
        else:
            self.weight = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.weight(x) + x


class RankerModel(nn.Module):
    def __init__(self, data: CtrData, config: RankerConfig) -> None:
        super().__init__()
        dim = config.embedding_dim
        cardinalities = [*data.categorical_cardinalities, *data.multi_cardinalities]
        sizes = [_table_size(c, config.hash_buckets) for c in cardinalities]
        # Per field (single-valued first): the table size ids are hashed into, or 0 for exact ids.
        self._buckets = [size if size < c else 0 for size, c in zip(sizes, cardinalities, strict=True)]
        n_single = len(data.categorical_cardinalities)
        self.tables = nn.ModuleList(nn.Embedding(size, dim) for size in sizes[:n_single])
        self.bags = nn.ModuleList(nn.EmbeddingBag(size, dim, mode="mean") for size in sizes[n_single:])
        for table in [*self.tables, *self.bags]:
            nn.init.normal_(table.weight, std=_EMBEDDING_STD)

        input_dim = len(sizes) * dim + len(data.dense_names)
        self.cross = nn.ModuleList(
            CrossLayer(input_dim, config.cross_rank) for _ in range(config.cross_layers)
        )
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(config.mlp_depth):
            layers.append(nn.Linear(width, config.mlp_width))
            if config.layer_norm:
                layers.append(nn.LayerNorm(config.mlp_width))
            layers.append(nn.ReLU())
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = config.mlp_width
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        # Start at the base rate, so the first steps learn features instead of the intercept.
        rate = min(max(data.positive_rate, 1e-4), 1 - 1e-4)
        nn.init.constant_(self.head.bias, math.log(rate / (1 - rate)))
        self.fm = config.fm
        self.dim = dim

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B] and the field embeddings [B, fields, dim] (for the embedding L2 penalty)."""
        fields = [table(self._ids(batch.categorical[:, i], i)) for i, table in enumerate(self.tables)]
        for j, (bag, (values, offsets)) in enumerate(zip(self.bags, batch.multi, strict=True)):
            fields.append(bag(self._ids(values, len(self.tables) + j), offsets))
        # Data with dense features only has no field to embed: an empty [B, 0, dim].
        embeddings = (
            torch.stack(fields, dim=1) if fields else batch.dense.new_zeros(len(batch.dense), 0, self.dim)
        )
        x0 = torch.cat([embeddings.flatten(1), batch.dense], dim=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        logits = self.head(self.mlp(x)).squeeze(1)
        if self.fm:
            logits = logits + _fm_interaction(embeddings)
        return logits, embeddings

    def _ids(self, ids: torch.Tensor, field: int) -> torch.Tensor:
        """Exact ids, or a cheap multiplicative hash salted per field so fields collide differently."""
        buckets = self._buckets[field]
        return (ids * _HASH_MULTIPLIER + field) % buckets if buckets else ids

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [p for module in [*self.tables, *self.bags] for p in module.parameters()]

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]


def _table_size(cardinality: int, hash_buckets: int) -> int:
    return hash_buckets if 0 < hash_buckets < cardinality else cardinality


def _fm_interaction(embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of pairwise dot products between fields, via 0.5 * ((sum e)^2 - sum e^2)."""
    summed = embeddings.sum(dim=1)
    return 0.5 * (summed.pow(2) - embeddings.pow(2).sum(dim=1)).sum(dim=1)
