"""Fuzzing every decoder of outside input: events, the documents jobs and workers exchange,
campaign requests and files, dataset specs and paths. Whatever arrives, each one either
decodes it or refuses it with a reason; none crashes.

Each decoder meets :data:`EXAMPLES` documents (2,000; fuzz harder with ``REA_FUZZ_EXAMPLES``):
drawn from its model's own JSON schema (so the fuzzer reaches deep fields), the same broken in
one place, arbitrary JSON, and raw bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from rea.datapaths import confinement_problem
from rea.documents import MAX_DOCUMENTS, campaign_documents
from rea.events import (
    EVENT_TYPES,
    CampaignRequested,
    DeadLetter,
    Event,
    GrantTerms,
    encode_event,
    parse_event,
)
from rea.workloads import EpochRecord, JobInput, JobOutput, get_workload
from rea_executor.warm import Launch
from rea_planner import logic
from rea_planner.campaign import CampaignSpec, validate_campaign
from rea_workload.datasets.spec import parse_spec, spec_error

from .schema_strategies import json_values, mutated, valid
from .test_planner_logic import GRANT

EXAMPLES = int(os.environ.get("REA_FUZZ_EXAMPLES", "2000"))
FUZZ = fuzzing(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def documents(model: type[BaseModel], **fixed: Any) -> st.SearchStrategy[Any]:
    """Shaped like ``model`` (with ``fixed`` fields, such as an event's type), broken in one
    place, or anything at all."""
    shaped = valid(model.model_json_schema())
    if fixed:
        shaped = shaped.map(
            lambda document: {**document, **fixed} if isinstance(document, dict) else document
        )
    return st.one_of(shaped, shaped, mutated(shaped), json_values)


def encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The JSON text of ``values``, or, now and then, bytes that are not JSON at all."""
    text = values.map(lambda value: json.dumps(value).encode())
    return st.one_of(text, text, text, st.binary(max_size=200))


def decodes_or_refuses(decode: Callable[[bytes], Any], model: type[BaseModel]) -> Callable[[bytes], bool]:
    """Decode ``raw``: a ValidationError is a refusal; what decodes must be a ``model`` that
    encodes back to itself. True when it decoded."""

    def check(raw: bytes) -> bool:
        try:
            decoded = decode(raw)
        except ValidationError:
            return False
        assert isinstance(decoded, model)
        assert decode(decoded.model_dump_json().encode()) == decoded
        return True

    return check


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda model: model.__name__)
def test_every_event_decoder_decodes_or_refuses(event_type: type[Event]) -> None:
    kind = event_type.model_fields["type"].default
    decoded: list[bool] = []
    check = decodes_or_refuses(parse_event, Event)

    @FUZZ
    @given(encoded(documents(event_type, type=kind, version=1)))
    def fuzz(raw: bytes) -> None:
        ok = check(raw)
        decoded.append(ok)
        if ok:
            event = parse_event(raw)
            assert type(event) is event_type, "a document of one type decoded as another"
            assert parse_event(encode_event(event)) == event

    fuzz()
    assert len(decoded) == EXAMPLES
    assert sum(decoded) >= EXAMPLES // 20, "the fuzzer hardly reached past validation"


@pytest.mark.parametrize(
    "model",
    [DeadLetter, JobInput, JobOutput, EpochRecord, Launch, GrantTerms],
    ids=lambda model: model.__name__,
)
def test_every_document_decoder_decodes_or_refuses(model: type[BaseModel]) -> None:
    """What the logger reads back from the dead-letter topic, what a job reads (its input) and
    writes (its output and per-epoch progress), what a worker hands a warm zygote, and the terms
    of a grant as `rea grant create` parses them."""
    decoded: list[bool] = []
    check = decodes_or_refuses(model.model_validate_json, model)

    @FUZZ
    @given(encoded(documents(model)))
    def fuzz(raw: bytes) -> None:
        decoded.append(check(raw))

    fuzz()
    assert len(decoded) == EXAMPLES
    assert sum(decoded) >= EXAMPLES // 20


def test_campaign_requests_are_accepted_within_their_schema_or_rejected_with_reasons(
    tmp_path: Path,
) -> None:
    """The planner's first decision on any payload: accepted (every knob in range, the dataset
    allowed) or rejected with at least one reason; never an exception."""
    roots = [tmp_path]
    outcomes: list[str] = []
    schema = get_workload("ranker").schema
    names = st.sampled_from(["ranker", "autoint", "nope", "os:system"])
    datasets = st.sampled_from(
        [
            "movielens-100k",
            "synthetic:rows=300",
            "criteo:/etc/passwd",
            "criteo:../x",
            "parquet:/dev/zero?label=y",
        ]
    )
    shaped = valid(CampaignSpec.model_json_schema())
    requests = st.one_of(
        st.tuples(shaped, names, datasets).map(
            lambda drawn: (
                {**drawn[0], "workload": drawn[1], "dataset": drawn[2]}
                if isinstance(drawn[0], dict)
                else drawn[0]
            )
        ),
        mutated(shaped),
    ).filter(lambda request: isinstance(request, dict))

    @FUZZ
    @given(requests)
    def fuzz(request: dict[str, Any]) -> None:
        event = CampaignRequested(campaign_id="camp-1", correlation_id="corr-1", payload=request)
        named = request.get("grant")
        its_grant = GRANT.model_copy(update={"grant_id": named}) if isinstance(named, str) else None
        decision = logic.on_campaign_requested(None, event, data_roots=roots, grant=its_grant)
        campaign = decision.state
        assert campaign is not None
        outcomes.append(campaign.status)
        if campaign.status == "rejected":
            assert campaign.reasons and all(isinstance(reason, str) and reason for reason in campaign.reasons)
            return
        assert campaign.status == "planning" and campaign.spec is not None
        if campaign.spec.workload == "ranker":
            assert schema.errors(campaign.spec.baseline) == []
        assert not campaign.spec.dataset.startswith(("criteo:", "parquet:")), "a file outside the roots"
        assert validate_campaign(request, data_roots=roots)[1] == []

    fuzz()
    assert len(outcomes) == EXAMPLES
    assert "planning" in outcomes and "rejected" in outcomes


def test_campaign_files_parse_or_fail_with_a_reason() -> None:
    campaigns = valid(CampaignSpec.model_json_schema())
    texts = st.one_of(
        st.text(max_size=300),
        st.lists(campaigns, min_size=1, max_size=3).map(lambda docs: yaml.safe_dump_all(docs)),
        st.lists(campaigns, max_size=3).map(lambda docs: yaml.safe_dump({"campaigns": docs})),
        json_values.map(lambda value: yaml.safe_dump(value)),
    )

    @FUZZ
    @given(texts)
    def fuzz(text: str) -> None:
        try:
            parsed = campaign_documents(text)
        except ValueError as refusal:
            assert str(refusal)
            return
        assert parsed and all(isinstance(document, dict) for document in parsed)

    fuzz()


def test_a_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join(['*' + chr(97 + level)] * 9)}]\n"
        for level in range(9)
    )
    with pytest.raises(ValueError, match="aliases"):
        campaign_documents(bomb)
    with pytest.raises(ValueError, match="at most"):
        campaign_documents("name: x\n" + "#" * (1 << 20))
    with pytest.raises(ValueError, match=f"more than {MAX_DOCUMENTS}"):
        campaign_documents("---\nname: x\n" * (MAX_DOCUMENTS + 1))


def test_dataset_specs_parse_or_fail_with_a_reason(tmp_path: Path) -> None:
    kinds = st.sampled_from(["movielens-100k", "synthetic", "criteo", "parquet", "adult", "x", ""])
    specs = st.one_of(
        st.text(max_size=80),
        st.tuples(kinds, st.text(max_size=60)).map(lambda pair: f"{pair[0]}:{pair[1]}"),
    )

    @FUZZ
    @given(specs)
    def fuzz(text: str) -> None:
        problem = spec_error(text)
        assert problem is None or (isinstance(problem, str) and problem)
        try:
            parse_spec(text)
        except ValueError as refusal:
            assert str(refusal)
        assert confinement_problem(Path(text.replace("\0", "")), [tmp_path]) is not None or text.startswith(
            str(tmp_path)
        )

    fuzz()
