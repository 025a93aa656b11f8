"""LLM-written kernels: an optional source of candidates beyond the templates' grids.

A template's grid holds the kernels its author imagined; a language model may write others (a
different algorithm, a fusion the template lacks, a layout trick). After a search has walked the
grid, a :class:`Synthesizer` is shown a :class:`Brief` (the operator's reference and shapes, the
target's file layout, the fastest candidates so far with their source and speed, the latest that
failed and why) and answers with new candidates. KernelEvolve asks again with each round's
results, so the model sees what its last kernels did.

Its code is untrusted, exactly like a template's: the same sandboxed, adversarial evaluator
judges it, and nothing here compiles, imports or runs it. :func:`messages` and :func:`parse`
are pure; :class:`LlmSynthesizer` is the only part that talks to a network, through any
OpenAI-compatible endpoint (:mod:`rea.llm`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rea.events import describe_error
from rea.kernels import Candidate
from rea.llm import Chat, ChatEndpoint, UnusableAnswer, ask, endpoint_from, listed
from rea_kernel.checks import SUM_ORDER_ROUNDINGS
from rea_kernel.operators import Operator, get_operator
from rea_kernel.operators._base import dtype_name
from rea_kernel.targets import Target

if TYPE_CHECKING:
    from rea.settings import Settings

MAX_ANSWER_CHARS = 200_000
MAX_FILE_CHARS = 60_000
SHOWN_SOURCE_CHARS = 16_000
"""A source longer than this is cut in the prompt (with a mark), so a brief stays a few pages."""
TEMPERATURE = 0.7
"""Kernels want variety between rounds more than a repeatable answer: the registry keeps the
source that won, so a result never depends on asking again."""


class Attempt(BaseModel):
    """A candidate the search evaluated, as the author is shown it."""

    model_config = ConfigDict(frozen=True)

    candidate: Candidate
    verdict: str
    reason: str = ""
    speedup: float | None = Field(
        default=None, description="Over eager; None when it failed or was not timed."
    )


class Brief(BaseModel):
    """Everything an author is told: what to compute, where, and what has been tried."""

    model_config = ConfigDict(frozen=True)

    operator: str
    target: str
    device: str
    specification: str = Field(description="The operator's module: its docstring, shapes and reference.")
    guide: str = Field(description="The target's file layout and build (Target.authoring_guide).")
    benchmark_shapes: list[dict[str, object]]
    correctness_shapes: list[dict[str, object]]
    tolerance: str
    best: tuple[Attempt, ...] = ()
    failed: tuple[Attempt, ...] = ()
    count: int = Field(ge=1, description="Candidates to write this round.")


def brief(
    operator_name: str, target: Target, attempts: Sequence[Attempt], count: int, shown: int = 2
) -> Brief:
    """The brief for the next round: the ``shown`` fastest passing attempts (each with its
    source) and the ``shown`` latest failures of written candidates (reason only)."""
    operator = get_operator(operator_name)
    passing = sorted((a for a in attempts if a.speedup is not None), key=lambda a: -(a.speedup or 0.0))
    failed = [a for a in attempts if a.verdict != "passed" and a.candidate.author != "template"]
    dtype = operator.dtypes[0]
    tolerance = operator.tolerance(dtype)
    return Brief(
        operator=operator_name,
        target=target.name,
        device=target.device_name(),
        specification=inspect.getsource(inspect.getmodule(type(operator)) or type(operator)),
        guide=target.authoring_guide(),
        benchmark_shapes=[
            s.model_dump() | {"attributes": operator.attributes(s)} for s in operator.benchmark_shapes
        ],
        correctness_shapes=[s.model_dump() for s in operator.correctness_shapes],
        tolerance=f"{dtype_name(dtype)}: |out - ref| <= {tolerance.atol} + {tolerance.rtol} * |ref|"
        + (
            f" + {SUM_ORDER_ROUNDINGS} * roundoff * magnitude (the specification's `magnitude`: "
            "each element's terms' absolute values, summed)"
            if type(operator).magnitude is not Operator.magnitude
            else ""
        ),
        best=tuple(passing[:shown]),
        failed=tuple(failed[-shown:]),
        count=count,
    )


def _shown(source: str) -> str:
    if len(source) <= SHOWN_SOURCE_CHARS:
        return source
    return source[:SHOWN_SOURCE_CHARS] + f"\n... [{len(source) - SHOWN_SOURCE_CHARS} more characters]"


def messages(brief: Brief) -> Chat:
    """The chat request: the operator, the target, the evidence so far and the answer's shape."""
    task = {
        "task": (
            f"Write {brief.count} new kernel(s) for the operator {brief.operator!r} on the "
            f"{brief.target} target, each faster than the fastest below and different from every "
            "kernel shown. A kernel must match the reference within the tolerance on every "
            "correctness shape (odd, empty and large ones included) and is timed on the benchmark "
            "shapes against eager PyTorch. It must compute from its inputs on every call: cached "
            "outputs, modified inputs, work left running after run returns, reading the "
            "reference or anything outside its own folder are detected and rejected."
        ),
        "device": brief.device,
        "target_layout": brief.guide,
        "operator_module": brief.specification,
        "tolerance": brief.tolerance,
        "benchmark_shapes": brief.benchmark_shapes,
        "correctness_shapes": brief.correctness_shapes,
        "fastest_so_far": [
            {
                "speedup_vs_eager": round(a.speedup or 0.0, 3),
                "files": {n: _shown(s) for n, s in a.candidate.sources.items()},
            }
            for a in brief.best
        ],
        "recent_failures": [
            {"idea": a.candidate.note, "verdict": a.verdict, "reason": a.reason[:1000]} for a in brief.failed
        ],
        "answer_format": {
            "kernels": [
                {"idea": "one line: what this kernel does differently", "files": {"kernel.py": "..."}}
            ]
        },
    }
    return [
        {
            "role": "system",
            "content": "You write fast, correct compute kernels. Answer with one JSON object only.",
        },
        {"role": "user", "content": json.dumps(task)},
    ]


class Written(BaseModel):
    """One kernel as the model must write it; anything else in the answer is rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)

    idea: str = Field(min_length=1, max_length=500)
    files: dict[str, str] = Field(min_length=1, max_length=8)


def parse(
    answer: str, brief: Brief, author: str, seen: Collection[str] = ()
) -> tuple[list[Candidate], list[str]]:
    """The candidates in the model's answer, and why each rejected part was dropped.

    Rejects: text that is not one JSON object with a ``kernels`` list (code fences around it are
    tolerated), kernels of the wrong shape, files with path-like names or beyond
    ``MAX_FILE_CHARS``, a missing ``kernel.py``, kernels whose digest is in ``seen`` (already
    evaluated) or repeated, and kernels beyond ``brief.count``."""
    try:
        items = listed(answer, "kernels", MAX_ANSWER_CHARS)
    except UnusableAnswer as exc:
        return [], [str(exc)]
    accepted: list[Candidate] = []
    dropped: list[str] = []
    taken = set(seen)
    for index, item in enumerate(items):
        label = f"kernel {index}"
        if len(accepted) >= brief.count:
            dropped.append(f"{label}: more than the {brief.count} asked for")
            continue
        try:
            written = Written.model_validate(item)
            too_long = [name for name, source in written.files.items() if len(source) > MAX_FILE_CHARS]
            if too_long:
                raise ValueError(f"{', '.join(too_long)} longer than {MAX_FILE_CHARS} characters")
            candidate = Candidate(
                operator=brief.operator,
                target=brief.target,
                sources=written.files,
                author=author,
                note=written.idea,
            )
        except ValidationError as exc:
            dropped.append(f"{label}: {describe_error(exc)}")
            continue
        except ValueError as exc:
            dropped.append(f"{label}: {exc}")
            continue
        if candidate.digest in taken:
            dropped.append(f"{label}: repeats a kernel already evaluated")
            continue
        taken.add(candidate.digest)
        accepted.append(candidate)
    return accepted, dropped


class Synthesizer(Protocol):
    """Writes candidates from a brief. ``author`` names it on every candidate it writes (a
    model's name); ``propose`` never raises for its own sake: a failure is a reason in the list."""

    @property
    def author(self) -> str: ...

    def propose(self, brief: Brief, seen: Collection[str]) -> tuple[list[Candidate], list[str]]: ...


class LlmSynthesizer:
    """A synthesizer that asks an OpenAI-compatible chat endpoint."""

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint

    @property
    def author(self) -> str:
        return f"llm:{self.endpoint.model}"

    def propose(self, brief: Brief, seen: Collection[str]) -> tuple[list[Candidate], list[str]]:
        """Called from a search's thread, which runs no event loop of its own."""
        import httpx  # only where a model is asked: the rest of KernelEvolve runs without it

        try:
            answer = asyncio.run(ask(self.endpoint, messages(brief), temperature=TEMPERATURE))
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            return [], [f"the endpoint gave no usable answer ({type(exc).__name__}: {exc})"]
        return parse(answer, brief, self.author, seen)


def synthesizer_from(settings: Settings) -> LlmSynthesizer | None:
    """The LLM that writes kernels (``REA_LLM_BASE_URL``, ``REA_KERNEL_LLM_MODEL``), if one is
    configured."""
    endpoint = endpoint_from(
        settings, model=settings.kernel_llm_model, timeout_s=settings.kernel_llm_timeout_s
    )
    return None if endpoint is None else LlmSynthesizer(endpoint)
