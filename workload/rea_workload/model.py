"""The ranker: embeddings -> optional DCN-v2 cross network -> MLP -> one logit, plus optional FM.

Layout (``cross_layers`` > 0 stacks the cross network *before* the MLP, as in DCN-v2's
"stacked" variant; we pick stacked because it keeps one path from input to logit, so the
baseline is simply the special case with zero cross layers)::

    x0 = [field embeddings..., dense features]
    x  = cross_L(...cross_1(x0))           # x_{l+1} = x0 * (W_l x_l + b_l) + x_l
    logit = head(MLP(x)) [+ FM(field embeddings)]

Every field's table lives in one table-batched embedding (FBGEMM's layout: the tables' rows
concatenated), so one pooled lookup per batch serves all fields. A single-valued field is a bag
of one id; a multi-valued field's bag is mean-pooled. With ``hash_buckets`` > 0, fields with
more ids than that are hashed into a table of ``hash_buckets`` rows (fields that already fit
keep exact ids).

The model computes through :class:`~rea_workload.ops.Ops`, so evolved kernels can replace its
operators without changing what it computes.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from rea_workload.batches import Batch
from rea_workload.datasets.data import CtrData
from rea_workload.ops import Ops
from rea_workload.schema import RankerConfig

_HASH_MULTIPLIER = 2_654_435_761  # Knuth's multiplicative constant; ids < 2**31 cannot overflow int64
_EMBEDDING_STD = 0.05


class TableBatchedEmbedding(nn.Module):
    """All fields' tables as one weight [sum of rows, dim]; table ``t`` owns rows
    ``table_offsets[t] : table_offsets[t + 1]``."""

    def __init__(self, rows: list[int], dim: int) -> None:
        super().__init__()
        self.rows = rows
        self.weight = nn.Parameter(torch.empty(sum(rows), dim))
        nn.init.normal_(self.weight, std=_EMBEDDING_STD)
        self.table_offsets: torch.Tensor
        self.register_buffer("table_offsets", torch.tensor([0, *rows], dtype=torch.int64).cumsum(0))


class CrossLayer(nn.Module):
    """One DCN-v2 cross layer; a rank-``rank`` factorisation ``W = U V`` when 0 < rank < dim."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.low_rank = 0 < rank < dim
        if self.low_rank:
            self.down = nn.Linear(dim, rank, bias=False)  # V
            self.up = nn.Linear(rank, dim)  # U, and the bias
        else:
            self.full = nn.Linear(dim, dim)

    def weights(self) -> tuple[torch.Tensor, ...]:
        """As :meth:`Ops.dcn_cross` takes them: (W, b), or (U, V, b) for a low-rank layer."""
        if self.low_rank:
            return self.up.weight, self.down.weight, self.up.bias
        return self.full.weight, self.full.bias

    def forward(self, x0: torch.Tensor, x: torch.Tensor, ops: Ops) -> torch.Tensor:
        return ops.dcn_cross(x0, x, *self.weights())


class DenseLayer(nn.Module):
    """Linear, optional layer norm, ReLU, optional dropout: one hidden layer of the MLP."""

    def __init__(self, width_in: int, width: int, layer_norm: bool, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(width_in, width)
        self.norm = nn.LayerNorm(width) if layer_norm else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor, ops: Ops) -> torch.Tensor:
        if self.norm is None:
            x = ops.linear_bias_act(x, self.linear.weight, self.linear.bias, activation="relu")
        else:
            x = ops.linear_bias_act(x, self.linear.weight, self.linear.bias, activation="none")
            x = ops.layer_norm(x, self.norm.weight, self.norm.bias, eps=self.norm.eps, activation="relu")
        return x if self.dropout is None else self.dropout(x)


class RankerModel(nn.Module):
    def __init__(self, data: CtrData, config: RankerConfig, ops: Ops | None = None) -> None:
        super().__init__()
        self.ops = ops or Ops()
        dim = config.embedding_dim
        cardinalities = [*data.categorical_cardinalities, *data.multi_cardinalities]
        sizes = [_table_size(c, config.hash_buckets) for c in cardinalities]
        # Per field (single-valued first): the table size ids are hashed into, or 0 for exact ids.
        self._buckets = [size if size < c else 0 for size, c in zip(sizes, cardinalities, strict=True)]
        self.n_single = len(data.categorical_cardinalities)
        self.embeddings = TableBatchedEmbedding(sizes, dim)
        # The table's gradient holds only the rows a batch looked up, for a sparse optimiser.
        self.sparse_gradients = config.embedding_optimizer != "dense"

        input_dim = len(sizes) * dim + len(data.dense_names)
        self.cross = nn.ModuleList(
            CrossLayer(input_dim, config.cross_rank) for _ in range(config.cross_layers)
        )
        layers: list[DenseLayer] = []
        width = input_dim
        for _ in range(config.mlp_depth):
            layers.append(DenseLayer(width, config.mlp_width, config.layer_norm, config.dropout))
            width = config.mlp_width
        self.mlp = nn.ModuleList(layers)
        self.head = nn.Linear(width, 1)
        # Start at the base rate, so the first steps learn features instead of the intercept.
        rate = min(max(data.positive_rate, 1e-4), 1 - 1e-4)
        nn.init.constant_(self.head.bias, math.log(rate / (1 - rate)))
        self.fm = config.fm
        self.dim = dim

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B] and the field embeddings [B, fields, dim] (for the embedding L2 penalty)."""
        embeddings = self._embed(batch)
        x0 = torch.cat([embeddings.flatten(1), batch.dense], dim=1)
        x = self.ops.dcn_cross_stack(x0, [cast(CrossLayer, cross).weights() for cross in self.cross])
        for layer in self.mlp:
            x = layer(x, self.ops)
        logits = self.ops.linear_bias_act(x, self.head.weight, self.head.bias, activation="none").squeeze(1)
        if self.fm:
            logits = logits + self.ops.fm_interaction(embeddings).squeeze(1)
        return logits, embeddings

    def _embed(self, batch: Batch) -> torch.Tensor:
        """Every field's pooled embedding, [B, fields, dim], from one lookup over all tables."""
        rows = len(batch.dense)
        fields = len(self._buckets)
        if fields == 0:  # data with dense features only has no field to embed
            return batch.dense.new_zeros(rows, 0, self.dim)
        ids = [self._ids(batch.categorical[:, i], i) for i in range(self.n_single)]
        lengths = [torch.ones(self.n_single * rows, dtype=torch.int64, device=batch.dense.device)]
        for j, (values, starts) in enumerate(batch.multi):
            ids.append(self._ids(values, self.n_single + j))
            lengths.append(torch.diff(starts, append=starts.new_tensor([len(values)])))
        offsets = F.pad(torch.cat(lengths).cumsum(0), (1, 0))
        table = self.embeddings
        pooled = self.ops.embedding_bag_pooled(
            table.weight,
            table.table_offsets,
            torch.cat(ids),
            offsets,
            mode="mean",
            sparse_gradient=self.sparse_gradients,
        )
        return pooled.view(rows, fields, self.dim)

    def _ids(self, ids: torch.Tensor, field: int) -> torch.Tensor:
        """Exact ids, or a cheap multiplicative hash salted per field so fields collide differently."""
        buckets = self._buckets[field]
        return (ids * _HASH_MULTIPLIER + field) % buckets if buckets else ids

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embeddings.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("embeddings.")]


def _table_size(cardinality: int, hash_buckets: int) -> int:
    return hash_buckets if 0 < hash_buckets < cardinality else cardinality
