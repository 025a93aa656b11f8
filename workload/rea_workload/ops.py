"""The operators the ranker computes with, behind one indirection.

Every operator a ranking model spends its time in (pooled embedding lookup over all tables at
once, the DCN-v2 cross and a stack of them, dense layers, the FM interaction, layer norm, the
BCE-with-logits training loss) is a method of :class:`Ops`, with PyTorch as its implementation. Given a
:class:`KernelProvider` (KernelEvolve's registry, through ``rea_kernel.loader.RegistryKernels``),
an :class:`Ops` asks it for a kernel before each call and runs that instead where it has one;
where it has none, PyTorch runs.

Operator names, inputs and attributes are those of KernelEvolve's operator suite
(``rea_kernel.operators``), which defines each operator and the tolerance a kernel must meet:
the PyTorch code here computes the same functions (a test holds it to their references).

A call that must carry gradients (a training step) runs kernels only where the provider has
both the forward and its backward operator (``<name>_backward``), joined into one autograd
function: the operators in :data:`BACKWARDS` (the pooled lookup, DCN-v2 cross layers, dense
layers (a gelu layer as the layer with no activation, then PyTorch's gelu), the FM interaction,
layer norm, the loss), and only where the backward kernel computes the gradient of every input
that needs one. Every other training call runs PyTorch, so a forward kernel never mixes with
PyTorch's gradient of a slightly different forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

Attribute = str | int | float
Kernel = Callable[..., Any]
"""A forward kernel returns a tensor; a backward kernel, one gradient or a tuple of them."""
Activation = Literal["relu", "gelu", "none"]
NormActivation = Literal["relu", "none"]


Call = tuple[str, Sequence[torch.Tensor], Mapping[str, Attribute]]
"""An operator call: its name, inputs and attributes."""


class KernelProvider(Protocol):
    """Where faster kernels come from. ``find(calls)`` returns a kernel for each call, to run
    together (each as ``kernel(*inputs, **attributes)``), or None when any call has none: then
    PyTorch runs them all. Each call is counted as what will run it."""

    def find(self, calls: Sequence[Call]) -> list[Kernel] | None: ...


class Ops:
    """The model's operators: PyTorch, or a provider's kernel where it has one for the call."""

    def __init__(self, kernels: KernelProvider | None = None) -> None:
        self.kernels = kernels

    def embedding_bag_pooled(
        self,
        weights: torch.Tensor,
        table_offsets: torch.Tensor,
        indices: torch.Tensor,
        offsets: torch.Tensor,
        *,
        mode: Literal["sum", "mean"],
        sparse_gradient: bool = False,
    ) -> torch.Tensor:
        """Every table's bags pooled in one call, in FBGEMM's table-batched layout: ``weights``
        holds the tables' rows concatenated (table ``t`` from ``table_offsets[t]``), ``indices``
        are local to their table and grouped table by table, ``offsets`` [tables * batch + 1]
        bound each bag. Returns [batch, tables * dim]; an empty bag pools to zeros.

        With ``sparse_gradient``, a training call gives ``weights`` a sparse gradient (the rows
        looked up, each once and in order) for a sparse optimiser: from the provider's forward
        kernel and its sparse backward kernel (:data:`SPARSE_LOOKUP_BACKWARD`) where it has
        both, else from PyTorch."""
        inputs = (weights, table_offsets, indices, offsets)
        if sparse_gradient and _needs_gradient(inputs):
            return self._call(
                "embedding_bag_pooled",
                _sparse_embedding_bag_pooled,
                inputs,
                SPARSE_LOOKUP_BACKWARD,
                mode=mode,
            )
        return self._call("embedding_bag_pooled", _embedding_bag_pooled, inputs, mode=mode)

    def dcn_cross(self, x0: torch.Tensor, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        """One DCN-v2 cross layer, ``x0 * (W x + b) + x``: ``weights`` is (W, b), or (U, V, b)
        for a low-rank ``W = U V``."""
        return self._call("dcn_cross", _dcn_cross, (x0, x, *weights))

    def dcn_cross_stack(self, x0: torch.Tensor, layers: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """Cross layers one after another on ``x0``, each layer's weights as :meth:`dcn_cross`
        takes them: one kernel for the whole stack where the provider has one (a block of rows
        goes through every layer while in cache), else layer by layer through :meth:`dcn_cross`.
        A training call runs layer by layer, each layer's kernel pair where the provider has it."""
        if not layers:
            return x0
        inputs = (x0, *(weight for layer in layers for weight in layer))
        by_layer = partial(_dcn_cross_stack, cross=self.dcn_cross)  # also training's: no backward
        return self._call("dcn_cross_stack", by_layer, inputs, layers=len(layers))

    def linear_bias_act(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, activation: Activation
    ) -> torch.Tensor:
        """A dense layer. A gelu layer's training call is the layer with no activation (its kernel
        pair, where the provider has one) and then PyTorch's gelu, which keeps the pre-activation
        gelu's derivative needs and a fused layer's output cannot give back."""
        inputs = (x, weight, bias)
        if activation == "gelu" and self.kernels is not None and _needs_gradient(inputs):
            return F.gelu(self._call("linear_bias_act", _linear_bias_act, inputs, activation="none"))
        return self._call("linear_bias_act", _linear_bias_act, inputs, activation=activation)

    def fm_interaction(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[batch, fields, dim] -> [batch, 1]: the sum of the fields' pairwise dot products."""
        return self._call("fm_interaction", _fm_interaction, (embeddings,))

    def layer_norm(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        *,
        eps: float,
        activation: NormActivation = "none",
    ) -> torch.Tensor:
        """Layer norm over the last dimension, then ``activation`` (a normalised MLP layer's relu,
        which a kernel applies in the same pass)."""
        return self._call("layer_norm", _layer_norm, (x, weight, bias), eps=eps, activation=activation)

    def bce_with_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: mean binary cross-entropy of ``logits`` [n] against ``targets`` [n]."""
        return self._call("bce_with_logits", _bce_with_logits, (logits, targets))

    def _call(
        self,
        name: str,
        pytorch: Kernel,
        inputs: tuple[torch.Tensor, ...],
        backward: Backward | None = None,
        **attributes: Attribute,
    ) -> torch.Tensor:
        """``name`` on ``inputs``: the provider's kernel where it has one (for a training call,
        its forward kernel and ``backward``'s kernel, by default the operator's entry in
        :data:`BACKWARDS`), else ``pytorch``."""
        if self.kernels is not None and not _needs_gradient(inputs):
            found = self.kernels.find([(name, inputs, attributes)])
            if found is not None:
                output: torch.Tensor = found[0](*inputs, **attributes)
                return output
        elif self.kernels is not None:
            backward = backward or BACKWARDS.get(name)
            pair = None if backward is None else self._trainable(name, backward, inputs, attributes)
            if pair is not None:
                trained: torch.Tensor = _WithKernels.apply(*pair, backward, attributes, *inputs)
                return trained
        output = pytorch(*inputs, **attributes)
        return output

    def _trainable(
        self,
        name: str,
        backward: Backward,
        inputs: tuple[torch.Tensor, ...],
        attributes: Mapping[str, Attribute],
    ) -> list[Kernel] | None:
        """The forward and backward kernels for a training call, or None unless both exist. The
        backward's output gradient (and, where it takes it, the forward's output) is stood in for
        by a view of one zero, since only sizes are read before the backward runs."""
        assert self.kernels is not None
        if not backward.applies(attributes) or not backward.computes_every_gradient(inputs):
            return None
        stand_in = inputs[0].new_zeros(()).expand(backward.output_shape(inputs))
        return self.kernels.find(
            [
                (name, inputs, attributes),
                (backward.operator, backward.inputs(stand_in, inputs, stand_in), attributes),
            ]
        )


@dataclass(frozen=True)
class Backward:
    """How a training call reaches an operator's backward kernel, the operator named
    ``operator`` (``<name>_backward`` for a forward ``<name>``).

    ``inputs(grad_output, forward_inputs, output)`` are the backward operator's inputs. Its
    outputs, one tensor or a tuple, made into gradients by ``assemble(outputs, forward_inputs)``
    (by default they are the gradients), are the gradients of the forward's inputs at
    ``gradients``, in that order (the others, ids and offsets, have none); None: of every input,
    in order (a cross layer's four or, low-rank, five). ``output_shape(forward_inputs)`` is
    the forward's output shape, and ``applies(attributes)`` says whether the backward operator
    covers the call (a gelu layer's does not).
    """

    operator: str
    inputs: Callable[[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor], tuple[torch.Tensor, ...]]
    gradients: tuple[int, ...] | None
    output_shape: Callable[[tuple[torch.Tensor, ...]], tuple[int, ...]]
    applies: Callable[[Mapping[str, Attribute]], bool] = lambda attributes: True
    assemble: Callable[[Any, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] = lambda outputs, inputs: (
        (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    )

    def computes_every_gradient(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        """Whether every input that needs a gradient gets one from the backward operator (a
        loss's targets are labels; a call that differentiates them runs PyTorch)."""
        if self.gradients is None:
            return True
        needed = (position for position, tensor in enumerate(inputs) if tensor.requires_grad)
        return all(position in self.gradients for position in needed)


def _pooled_shape(inputs: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    weights, table_offsets, _, offsets = inputs
    tables = table_offsets.numel() - 1
    return (offsets.numel() - 1) // max(tables, 1), tables * weights.shape[1]


BACKWARDS: Mapping[str, Backward] = MappingProxyType(
    {
        # d weights, from the output gradient and the bags (the lookup is linear in the weights).
        "embedding_bag_pooled": Backward(
            operator="embedding_bag_pooled_backward",
            inputs=lambda grad, inputs, output: (grad, *inputs[1:]),
            gradients=(0,),
            output_shape=_pooled_shape,
        ),
        # d x0, d x, d W (or d U, d V), d b, from the forward's inputs (W x + b is recomputed).
        "dcn_cross": Backward(
            operator="dcn_cross_backward",
            inputs=lambda grad, inputs, output: (grad, *inputs),
            gradients=None,
            output_shape=lambda inputs: tuple(inputs[0].shape),
        ),
        # d x, d W, d b, from the layer's input and weight and its output (relu's derivative).
        "linear_bias_act": Backward(
            operator="linear_bias_act_backward",
            inputs=lambda grad, inputs, output: (grad, inputs[0], inputs[1], output),
            gradients=(0, 1, 2),
            output_shape=lambda inputs: (inputs[0].shape[0], inputs[1].shape[0]),
            applies=lambda attributes: attributes["activation"] in ("relu", "none"),
        ),
        # d embeddings, from the embeddings (each field's partner is the sum of the others).
        "fm_interaction": Backward(
            operator="fm_interaction_backward",
            inputs=lambda grad, inputs, output: (grad, inputs[0]),
            gradients=(0,),
            output_shape=lambda inputs: (inputs[0].shape[0], 1),
        ),
        # d x, d weight, d bias, from the input and the weight (the statistics are recomputed)
        # and the output (relu's derivative).
        "layer_norm": Backward(
            operator="layer_norm_backward",
            inputs=lambda grad, inputs, output: (grad, inputs[0], inputs[1], output),
            gradients=(0, 1, 2),
            output_shape=lambda inputs: tuple(inputs[0].shape),
        ),
        # d logits, from the loss's gradient, the logits and the targets.
        "bce_with_logits": Backward(
            operator="bce_with_logits_backward",
            inputs=lambda grad, inputs, output: (grad, *inputs),
            gradients=(0,),
            output_shape=lambda inputs: (),
        ),
    }
)
"""The operators whose training calls can run kernels both ways, by name."""


def _sparse_gradient(outputs: Any, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The weights' gradient from the sparse backward's rows and values, marked coalesced as the
    operator's contract makes it (rows unique and increasing, checked when the kernel was
    evaluated). Autograd drops the mark when it stores the gradient; the optimisers' step finds
    the rows in order and marks it again (``rea_workload.optim.coalesced``)."""
    rows, values = outputs
    gradient = torch.sparse_coo_tensor(
        rows.unsqueeze(0), values, inputs[0].shape, is_coalesced=True, check_invariants=False
    )
    return (gradient,)


SPARSE_LOOKUP_BACKWARD = Backward(
    operator="embedding_bag_pooled_sparse_backward",
    inputs=lambda grad, inputs, output: (grad, *inputs[1:]),
    gradients=(0,),
    output_shape=_pooled_shape,
    assemble=_sparse_gradient,
)
"""The pooled lookup's training call with a sparse weight gradient: the rows a batch looked up,
for a sparse optimiser (``embedding_optimizer``)."""


class _WithKernels(torch.autograd.Function):
    """An operator with a forward kernel and its backward kernel."""

    @staticmethod
    def forward(
        ctx: Any,
        forward: Kernel,
        backward_kernel: Kernel,
        backward: Backward,
        attributes: Mapping[str, Attribute],
        *inputs: torch.Tensor,
    ) -> torch.Tensor:
        output: torch.Tensor = forward(*inputs, **attributes)
        ctx.save_for_backward(*inputs, output)
        ctx.kernel, ctx.backward, ctx.attributes = backward_kernel, backward, attributes
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        *inputs, output = ctx.saved_tensors
        backward: Backward = ctx.backward
        computed = ctx.kernel(*backward.inputs(grad_output, tuple(inputs), output), **ctx.attributes)
        gradients: list[torch.Tensor | None] = [None] * len(inputs)
        positions = range(len(inputs)) if backward.gradients is None else backward.gradients
        for position, gradient in zip(positions, backward.assemble(computed, tuple(inputs)), strict=True):
            gradients[position] = gradient
        return None, None, None, None, *gradients


def _needs_gradient(inputs: tuple[torch.Tensor, ...]) -> bool:
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)


def _embedding_bag_pooled(
    weights: torch.Tensor,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: Literal["sum", "mean"],
    sparse: bool = False,
) -> torch.Tensor:
    """One :func:`~torch.nn.functional.embedding_bag` over all tables: each index is moved to its
    table's rows, and the [tables * batch] bags come back table-major; ``sparse``: the weights'
    gradient is sparse."""
    tables = table_offsets.numel() - 1
    batch = (offsets.numel() - 1) // tables if tables else 0
    dim = weights.shape[1]
    if batch == 0:
        return weights.new_zeros(0, tables * dim)
    per_table = offsets[::batch].diff()
    rows = indices + table_offsets[:-1].repeat_interleave(per_table)
    pooled = F.embedding_bag(rows, weights, offsets, mode=mode, include_last_offset=True, sparse=sparse)
    return pooled.view(tables, batch, dim).transpose(0, 1).reshape(batch, tables * dim)


def _sparse_embedding_bag_pooled(
    weights: torch.Tensor,
    table_offsets: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mode: Literal["sum", "mean"],
) -> torch.Tensor:
    return _embedding_bag_pooled(weights, table_offsets, indices, offsets, mode=mode, sparse=True)


def _dcn_cross(x0: torch.Tensor, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
    if len(weights) == 2:
        weight, bias = weights
        return x0 * F.linear(x, weight, bias) + x
    up, down, bias = weights
    return x0 * F.linear(F.linear(x, down), up, bias) + x


def _dcn_cross_stack(
    x0: torch.Tensor, *weights: torch.Tensor, layers: int, cross: Kernel = _dcn_cross
) -> torch.Tensor:
    """``cross`` layer after layer from ``x = x0``, the weights divided evenly among the layers."""
    per_layer = len(weights) // max(layers, 1)
    x = x0
    for layer in range(layers):
        x = cross(x0, x, *weights[layer * per_layer : (layer + 1) * per_layer])
    return x


def _linear_bias_act(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, activation: Activation
) -> torch.Tensor:
    out = F.linear(x, weight, bias)
    if activation == "relu":
        return F.relu(out)
    if activation == "gelu":
        return F.gelu(out)
    return out


def _fm_interaction(embeddings: torch.Tensor) -> torch.Tensor:
    """Via ``0.5 * ((sum e)^2 - sum e^2)``, linear in the number of fields."""
    summed = embeddings.sum(dim=1)
    return 0.5 * (summed.pow(2) - embeddings.pow(2).sum(dim=1)).sum(dim=1, keepdim=True)


def _layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, eps: float, activation: NormActivation
) -> torch.Tensor:
    normal = F.layer_norm(x, (x.shape[-1],), weight, bias, eps=eps)
    return F.relu(normal) if activation == "relu" else normal


def _bce_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets)


PYTORCH: Mapping[str, Kernel] = MappingProxyType(
    {
        "embedding_bag_pooled": _embedding_bag_pooled,
        "dcn_cross": _dcn_cross,
        "dcn_cross_stack": _dcn_cross_stack,
        "linear_bias_act": _linear_bias_act,
        "fm_interaction": _fm_interaction,
        "layer_norm": _layer_norm,
        "bce_with_logits": _bce_with_logits,
    }
)
"""Each operator's PyTorch implementation, by the name kernels are registered under."""
