"""The logger's batched, insert-if-absent writes, on the real embedded MongoDB."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import BulkWriteError

from rea.store import Store
from rea_logger.service import insert_absent

DOCUMENT_VALIDATION_FAILURE = 121


async def test_a_batch_skips_what_is_already_there_and_reports_what_it_inserted(store: Store) -> None:
    collection = store.db["logger_writes"]
    await collection.insert_one({"_id": "b", "n": 0})
    docs: list[dict[str, Any]] = [{"_id": key, "n": 1} for key in ("a", "b", "c", "b")]

    inserted = await insert_absent(collection, docs)

    assert inserted == [0, 2]
    assert {doc["_id"]: doc["n"] async for doc in collection.find()} == {"a": 1, "b": 0, "c": 1}
    assert await insert_absent(collection, docs) == []
    assert await insert_absent(collection, []) == []


async def test_a_write_error_other_than_a_duplicate_is_raised(store: Store) -> None:
    collection = store.db["logger_writes_validated"]
    await store.db.create_collection(
        "logger_writes_validated", validator={"$jsonSchema": {"required": ["n"]}}
    )
    with pytest.raises(BulkWriteError) as raised:
        await insert_absent(collection, [{"_id": "x"}, {"_id": "y", "n": 1}])
    assert {error["code"] for error in raised.value.details["writeErrors"]} == {DOCUMENT_VALIDATION_FAILURE}
