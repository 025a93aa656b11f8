"""Hypothesis strategies for hostile input, derived from the models' own JSON schemas.

``valid(schema)`` draws documents shaped like the schema (the subset pydantic writes: ``$ref``,
``anyOf``, ``const``, ``enum``, objects, arrays, bounded strings and numbers, date-times), so a
fuzzer reaches deep into every event instead of stopping at the first missing field.
``mutated`` then breaks one place in such a document, and ``json_values`` is anything at all.
"""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
"""Any JSON document (the floats finite: JSON has no NaN)."""

KEYS = st.text(max_size=12) | st.integers(min_value=-3, max_value=50).map(str)
"""Mapping keys: any text, or a number (JSON's keys are text; a model's ``dict[int, ...]`` reads
numbers from them, and its schema cannot say so)."""
UNBOUNDED_TEXT = 24
UNBOUNDED_ITEMS = 3


def valid(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Documents that follow ``schema`` (validators beyond it may still refuse some)."""
    definitions: dict[str, Any] = schema.get("$defs", {})
    built: dict[str, st.SearchStrategy[Any]] = {}

    def reference(name: str) -> st.SearchStrategy[Any]:
        if name not in built:
            built[name] = st.deferred(lambda: node(definitions[name]))
        return built[name]

    def node(part: dict[str, Any]) -> st.SearchStrategy[Any]:
        if "$ref" in part:
            return reference(part["$ref"].rsplit("/", 1)[-1])
        if "const" in part:
            return st.just(part["const"])
        if "enum" in part:
            return st.sampled_from(part["enum"])
        if "anyOf" in part:
            return st.one_of([node(option) for option in part["anyOf"]])
        kind = part.get("type")
        if kind is None:
            return json_values
        return TYPES[kind](part, node)

    return node(schema)


def _object(part: dict[str, Any], node: Any) -> st.SearchStrategy[Any]:
    properties: dict[str, Any] = part.get("properties", {})
    required = set(part.get("required", ()))
    fixed = st.fixed_dictionaries(
        {name: node(value) for name, value in properties.items() if name in required},
        optional={name: node(value) for name, value in properties.items() if name not in required},
    )
    extra = part.get("additionalProperties")
    if isinstance(extra, dict) or (extra is None and not properties):
        values = node(extra) if isinstance(extra, dict) else json_values
        more = st.dictionaries(KEYS, values, max_size=UNBOUNDED_ITEMS)
        return st.tuples(more, fixed).map(lambda pair: {**pair[0], **pair[1]})
    return fixed


def _string(part: dict[str, Any], _: Any) -> st.SearchStrategy[Any]:
    if part.get("format") == "date-time":
        return st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat())
    low = part.get("minLength", 0)
    return st.text(min_size=low, max_size=part.get("maxLength", low + UNBOUNDED_TEXT))


def _integer(part: dict[str, Any], _: Any) -> st.SearchStrategy[Any]:
    low, high = part.get("minimum"), part.get("maximum")
    if "exclusiveMinimum" in part:
        low = math.floor(part["exclusiveMinimum"]) + 1
    return st.integers(min_value=low, max_value=high)


def _number(part: dict[str, Any], _: Any) -> st.SearchStrategy[Any]:
    low = part.get("minimum", part.get("exclusiveMinimum"))
    return st.floats(
        min_value=low,
        max_value=part.get("maximum"),
        exclude_min="exclusiveMinimum" in part,
        allow_nan=False,
        allow_infinity=False,
    )


def _array(part: dict[str, Any], node: Any) -> st.SearchStrategy[Any]:
    if "prefixItems" in part:
        return st.tuples(*(node(item) for item in part["prefixItems"])).map(list)
    low = part.get("minItems", 0)
    items = node(part["items"]) if "items" in part else json_values
    return st.lists(items, min_size=low, max_size=part.get("maxItems", low + UNBOUNDED_ITEMS))


TYPES: dict[str, Any] = {
    "object": _object,
    "string": _string,
    "integer": _integer,
    "number": _number,
    "array": _array,
    "boolean": lambda part, node: st.booleans(),
    "null": lambda part, node: st.none(),
}


def _places(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``document``: the places a mutation can land."""
    places = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            places += _places(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            places += _places(value, (*path, index))
    return places


def _replaced(document: Any, path: tuple[Any, ...], change: Any) -> Any:
    """``document`` with the value at ``path`` passed through ``change`` (a copy)."""
    if not path:
        return change(document)
    head, *rest = path
    if isinstance(document, dict):
        return {**document, head: _replaced(document[head], tuple(rest), change)}
    copy = list(document)
    copy[head] = _replaced(document[head], tuple(rest), change)
    return copy


_DROP = object()


def _dropping(document: Any, key: Any) -> Any:
    if isinstance(document, dict):
        return {name: value for name, value in document.items() if name != key}
    return document


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document from ``documents`` broken in one place: a value replaced by any JSON, a key
    dropped or added, a type name swapped, or the whole nested a hundred levels deep."""
    document = draw(documents)
    path = draw(st.sampled_from(_places(document)))
    action = draw(st.sampled_from(["replace", "drop", "add", "nest"]))
    if action == "replace":
        value = draw(json_values | st.sampled_from(["", "x" * 5000, -1, 0, 2**63, 1e308, [], {}]))
        return _replaced(document, path, lambda _: value)
    if action == "drop" and path:
        return _replaced(document, path[:-1], lambda parent: _dropping(parent, path[-1]))
    if action == "add":
        key, value = draw(st.text(max_size=10)), draw(json_values)
        return _replaced(
            document, path, lambda here: {**here, key: value} if isinstance(here, dict) else here
        )
    depth = draw(st.integers(min_value=1, max_value=100))
    return _replaced(document, path, lambda here: _nested(here, depth))


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value
