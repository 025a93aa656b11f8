"""AutoInt (Song et al., CIKM 2019): self-attention over field embeddings, then a small tower.

Every field becomes one token of width ``field_dim``: single-valued ids through an
``nn.Embedding``, multi-valued ids through an ``nn.EmbeddingBag`` (mean), and each dense
feature ``x_m`` as ``x_m * v_m`` with a learned vector ``v_m``, as in the paper. Each
interacting layer lets every field attend to every other with ``attn_heads`` heads of width
``field_dim``::

    head_h(e_m) = sum_k softmax_k(<W_q e_m, W_k e_k> [/ sqrt(d)]) W_v e_k
    e_m'       = ReLU(concat_h head_h(e_m) [+ W_res e_m])

The layers' output is flattened and fed to one hidden ReLU layer of ``tower_units``, then a
logit. The paper's output layer is linear; the tower gives REA's width role a knob to act on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rea_autoint.schema import AutoIntConfig
from rea_workload.batches import Batch
from rea_workload.datasets.data import CtrData


class InteractingLayer(nn.Module):
    """One multi-head self-attention layer over the field tokens."""

    def __init__(self, width: int, head_dim: int, heads: int, config: AutoIntConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.query = nn.Linear(width, heads * head_dim, bias=False)
        self.key = nn.Linear(width, heads * head_dim, bias=False)
        self.value = nn.Linear(width, heads * head_dim, bias=False)
        self.residual = nn.Linear(width, heads * head_dim, bias=False) if config.residual else None
        self.scale = 1 / math.sqrt(head_dim) if config.attn_scale == "scaled_dot" else 1.0
        self.dropout = nn.Dropout(config.drop_rate)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        rows, fields, _ = tokens.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(rows, fields, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(tokens)), split(self.key(tokens)), split(self.value(tokens))
        weights = self.dropout(torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(rows, fields, self.heads * self.head_dim)
        if self.residual is not None:
            out = out + self.residual(tokens)
        return F.relu(out)


class AutoIntModel(nn.Module):
    def __init__(self, data: CtrData, config: AutoIntConfig) -> None:
        super().__init__()
        dim = config.field_dim
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in data.categorical_cardinalities)
        self.bags = nn.ModuleList(nn.EmbeddingBag(c, dim, mode="mean") for c in data.multi_cardinalities)
        self.dense_vectors = nn.Parameter(torch.empty(len(data.dense_names), dim))
        for weight in [*(t.weight for t in [*self.tables, *self.bags]), self.dense_vectors]:
            nn.init.normal_(weight, std=config.init_std)

        fields = len(self.tables) + len(self.bags) + len(data.dense_names)
        width = dim
        layers = []
        for _ in range(config.attn_blocks):
            layers.append(InteractingLayer(width, dim, config.attn_heads, config))
            width = dim * config.attn_heads
        self.interacting = nn.ModuleList(layers)
        self.tower = nn.Sequential(
            nn.Linear(fields * width, config.tower_units), nn.ReLU(), nn.Dropout(config.drop_rate)
        )
        self.head = nn.Linear(config.tower_units, 1)
        # Start at the base rate, so the first steps learn features rather than the intercept.
        rate = min(max(data.positive_rate, 1e-4), 1 - 1e-4)
        nn.init.constant_(self.head.bias, math.log(rate / (1 - rate)))

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The per-id and per-dense-feature vectors, which weight decay leaves alone."""
        return [*(t.weight for t in [*self.tables, *self.bags]), self.dense_vectors]

    def forward(self, batch: Batch) -> torch.Tensor:
        tokens = [table(batch.categorical[:, i]) for i, table in enumerate(self.tables)]
        tokens += [bag(ids, offsets) for bag, (ids, offsets) in zip(self.bags, batch.multi, strict=True)]
        dense = batch.dense.unsqueeze(-1) * self.dense_vectors  # [B, dense features, dim]
        x = torch.cat([*(token.unsqueeze(1) for token in tokens), dense], dim=1)  # [B, fields, dim]
        for layer in self.interacting:
            x = layer(x)
        return self.head(self.tower(x.flatten(1))).squeeze(-1)
