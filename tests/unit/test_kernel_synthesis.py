"""LLM-written kernels: the brief an author is shown, the parser that keeps malformed answers
from ever becoming candidates, and a search on this CPU that asks a local OpenAI-compatible
endpoint for kernels, judges what it writes like any candidate, and tells the next round why
the last one failed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rea.kernels import Candidate
from rea.llm import ChatEndpoint
from rea_kernel.evaluator import Evaluation
from rea_kernel.synthesis import MAX_FILE_CHARS, Attempt, LlmSynthesizer, brief, messages, parse
from rea_kernel.targets import get_target
from rea_kernel.tuning import tune

from ..llm_server import llm_server
from .test_kernel_tuning import SMALL

CPU = get_target("cpu")
AUTHOR = "llm:test-model"
TEMPLATE = CPU.render("layer_norm", CPU.default_params("layer_norm"))
HONEST = {
    **TEMPLATE.sources,
    "kernel.cpp": "// the template's, rewritten by hand\n" + TEMPLATE.sources["kernel.cpp"],
}
MUTATES_INPUT = {
    "kernel.py": (
        "import torch.nn.functional as F\n\n"
        "def run(x, weight, bias, eps, activation):\n"
        "    out = F.layer_norm(x, (x.shape[-1],), weight, bias, eps=eps)\n"
        "    x.zero_()\n"
        "    return out\n"
    ),
    "kernel.cpp": 'extern "C" void unused() {}\n',
}


def answer(*kernels: dict[str, Any]) -> str:
    return json.dumps({"kernels": list(kernels)})


def written(files: dict[str, str], idea: str = "a new idea") -> dict[str, Any]:
    return {"idea": idea, "files": files}


def a_brief(count: int = 2, attempts: tuple[Attempt, ...] = ()) -> Any:
    return brief("layer_norm", CPU, attempts, count)


def test_a_written_kernel_becomes_a_candidate_that_names_its_author() -> None:
    [candidate], dropped = parse(answer(written(HONEST, "one pass")), a_brief(), AUTHOR)
    assert dropped == []
    assert candidate.author == AUTHOR and candidate.note == "one pass" and candidate.params == {}
    assert candidate.operator == "layer_norm" and candidate.target == "cpu" and candidate.sources == HONEST


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("here is a kernel", "not JSON"),
        ("[]", "not an object with a 'kernels' list"),
        (json.dumps({"kernel": []}), "not an object with a 'kernels' list"),
        (answer(written({"kernel.cpp": "int x;"})), "needs a kernel.py"),
        (answer(written({"kernel.py": "", "../evil.py": ""})), "not a plain file name"),
        (answer(written({"kernel.py": "", ".bashrc": ""})), "not a plain file name"),
        (answer(written({"kernel.py": "x" * (MAX_FILE_CHARS + 1)})), "longer than"),
        (answer({"idea": "x", "files": {"kernel.py": ""}, "params": {"a": 1}}), "params"),
        (answer({"idea": "", "files": {"kernel.py": ""}}), "idea"),
        (answer({"idea": "x", "files": {"kernel.py": 7}}), "files.kernel.py"),
        (answer(written({})), "files"),
    ],
)
def test_malformed_answers_and_kernels_are_dropped_with_a_reason(text: str, reason: str) -> None:
    accepted, dropped = parse(text, a_brief(), AUTHOR)
    assert accepted == []
    assert len(dropped) == 1 and reason in dropped[0]


def test_repeats_and_kernels_beyond_the_count_are_dropped() -> None:
    seen = {Candidate(operator="layer_norm", target="cpu", sources=HONEST).digest}
    accepted, dropped = parse(
        answer(written(HONEST), written(MUTATES_INPUT), written(MUTATES_INPUT), written({"kernel.py": "#"})),
        a_brief(count=1),
        AUTHOR,
        seen,
    )
    assert [c.sources for c in accepted] == [MUTATES_INPUT]
    assert ["already evaluated" in r for r in dropped] == [True, False, False]
    assert all("more than the 1 asked for" in r for r in dropped[1:])


def test_an_answer_in_a_code_fence_is_read() -> None:
    accepted, _ = parse("```json\n" + answer(written(HONEST)) + "\n```", a_brief(), AUTHOR)
    assert len(accepted) == 1


def test_the_brief_shows_the_reference_the_layout_the_fastest_kernels_and_the_written_failures() -> None:
    fast = Attempt(candidate=TEMPLATE, verdict="passed", speedup=1.7)
    slow = Attempt(candidate=TEMPLATE.model_copy(update={"params": {"x": 1}}), verdict="passed", speedup=0.5)
    grid_failure = Attempt(candidate=TEMPLATE, verdict="rejected", reason="a template's failure")
    wrong = Candidate(
        operator="layer_norm", target="cpu", sources=MUTATES_INPUT, author=AUTHOR, note="zeroes x"
    )
    written_failure = Attempt(candidate=wrong, verdict="rejected", reason="modified its input x")
    made = a_brief(attempts=(slow, grid_failure, fast, written_failure))
    assert made.best == (fast, slow)
    assert made.failed == (written_failure,)
    [system, user] = messages(made)
    task = json.loads(user["content"])
    assert "F.layer_norm" in task["operator_module"]  # the reference itself
    assert "kernel.so" in task["target_layout"] and "-march=native" in task["target_layout"]
    assert task["fastest_so_far"][0]["speedup_vs_eager"] == 1.7
    assert task["fastest_so_far"][0]["files"]["kernel.cpp"] == TEMPLATE.sources["kernel.cpp"]
    assert task["recent_failures"] == [
        {"idea": "zeroes x", "verdict": "rejected", "reason": "modified its input x"}
    ]
    assert {"rows", "dim", "attributes"} <= set(task["benchmark_shapes"][0])
    assert "JSON" in system["content"]


def test_an_endpoint_that_fails_gives_no_candidates_and_a_reason() -> None:
    with llm_server(status=500) as server:
        synthesizer = LlmSynthesizer(ChatEndpoint(base_url=server.url, model="test-model", timeout_s=5))
        accepted, dropped = synthesizer.propose(a_brief(), ())
    assert accepted == [] and "no usable answer" in dropped[0] and "500" in dropped[0]


@pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))
def test_a_search_judges_written_kernels_like_any_and_briefs_the_next_round_with_what_failed() -> None:
    seen: list[tuple[int, Candidate, Evaluation]] = []
    reply = answer(written(HONEST, "the template, by hand"), written(MUTATES_INPUT, "zeroes x"))
    with llm_server(reply) as server:
        synthesizer = LlmSynthesizer(ChatEndpoint(base_url=server.url, model="test-model"))
        outcome = tune(
            "layer_norm",
            "cpu",
            2,
            settings=SMALL,
            on_evaluated=lambda n, c, e: seen.append((n, c, e)),
            synthesizer=synthesizer,
            synthesized=4,
        )
    assert [n for n, _, _ in seen] == [1, 2, 3, 4]
    by_author = {c.note: e for _, c, e in seen if c.author == AUTHOR}
    assert by_author["the template, by hand"].passed
    assert not by_author["zeroes x"].passed and "modified" in by_author["zeroes x"].reason
    # Round 2 is told what round 1 did; its answer repeats round 1's kernels, so it and round 3
    # yield nothing new and the synthesizer is given up on with budget left.
    assert len(server.requests) == 3
    second = json.loads(server.requests[1]["body"]["messages"][1]["content"])
    assert [f["idea"] for f in second["recent_failures"]] == ["zeroes x"]
    assert any("already evaluated" in reason for reason in outcome.synthesis_dropped)
    assert outcome.best is not None and outcome.final is not None and outcome.final.passed
    assert outcome.entries and outcome.entries[0].candidate == outcome.best
