"""The operator suite: the operators ranking models spend their time in, each with its
reference, shape space and tolerances (the contract is :class:`Operator`'s docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rea_kernel.operators._base import (
    Attribute,
    Operator,
    Result,
    Shape,
    Tolerance,
    dtype_name,
    size_class,
)
from rea_kernel.operators.bce_with_logits import BceWithLogits
from rea_kernel.operators.bce_with_logits_backward import BceWithLogitsBackward
from rea_kernel.operators.dcn_cross import DcnCross
from rea_kernel.operators.dcn_cross_backward import DcnCrossBackward
from rea_kernel.operators.dcn_cross_stack import DcnCrossStack
from rea_kernel.operators.embedding_bag import EmbeddingBagPooled
from rea_kernel.operators.embedding_bag_backward import EmbeddingBagPooledBackward
from rea_kernel.operators.embedding_bag_sparse_backward import EmbeddingBagPooledSparseBackward
from rea_kernel.operators.fm_interaction import FmInteraction
from rea_kernel.operators.fm_interaction_backward import FmInteractionBackward
from rea_kernel.operators.layer_norm import LayerNorm
from rea_kernel.operators.layer_norm_backward import LayerNormBackward
from rea_kernel.operators.linear_bias_act import LinearBiasAct
from rea_kernel.operators.linear_bias_act_backward import LinearBiasActBackward

OPERATORS: Mapping[str, Operator[Any]] = MappingProxyType(
    {
        operator.name: operator
        for operator in (
            EmbeddingBagPooled(),
            EmbeddingBagPooledBackward(),
            EmbeddingBagPooledSparseBackward(),
            DcnCross(),
            DcnCrossBackward(),
            DcnCrossStack(),
            LinearBiasAct(),
            LinearBiasActBackward(),
            FmInteraction(),
            FmInteractionBackward(),
            LayerNorm(),
            LayerNormBackward(),
            BceWithLogits(),
            BceWithLogitsBackward(),
        )
    }
)


def get_operator(name: str) -> Operator[Any]:
    try:
        return OPERATORS[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; known: {', '.join(OPERATORS)}") from None


__all__ = [
    "OPERATORS",
    "Attribute",
    "Operator",
    "Result",
    "Shape",
    "Tolerance",
    "dtype_name",
    "get_operator",
    "size_class",
]
