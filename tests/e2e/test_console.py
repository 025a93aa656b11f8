"""The console against a real MongoDB: campaign, phase and job-ledger documents are written
directly (no services run), and `rea` is run as a person runs it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rea.store import Store

from ..unit.test_console import CAMPAIGN, PHASES, campaign
from .helpers import run_rea

pytestmark = pytest.mark.e2e

TWIN = "3f2a91c0ffff00001111222233334444"  # shares its first 8 characters with CAMPAIGN
REJECTED = "9b1e0c2d3e4f5a6b7c8d9e0f1a2b3c4d"
FAILED_JOB = f"{CAMPAIGN}-validation-lr_up-s0"
STARTED = datetime(2025, 3, 1, 11, 0, 0, tzinfo=UTC)


async def write_documents(store: Store) -> None:
    twin = campaign(campaign_id=TWIN, records=[], phase="validation", status="awaiting_approval")
    twin["spec"] = {**twin["spec"], "name": "the twin"}
    rejected = {
        "campaign_id": REJECTED,
        "status": "rejected",
        "request": {"name": "a typo", "budget_cpu_seconds": -1},
        "spec": None,
        "reasons": ["budget_cpu_seconds: must be greater than 0"],
        "updated_at": "2025-03-01T10:00:00+00:00",
    }
    for state in (campaign(), twin, rejected):
        await store.campaigns.insert_one({"_id": state["campaign_id"], "state": state, "version": 1})
    for phase in PHASES:
        await store.phases.insert_one({"_id": f"{CAMPAIGN}:{phase['phase']}", "state": phase, "version": 1})
    await store["job_runs"].insert_one(
        {
            "_id": FAILED_JOB,
            "campaign_id": CAMPAIGN,
            "phase": "validation",
            "worker": "w-1",
            "claimed_at": STARTED,
            "pid": 4242,
            "started_at": STARTED,
            "cpu_seconds": 4.0,
            "status": "failed",
            "finished_at": STARTED + timedelta(seconds=75),
            "final": b"{}",
            "log": "epoch 1 loss 0.52\nepoch 2 loss nan\nFloatingPointError: loss became NaN\n",
        }
    )


def rea(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    done = run_rea(args, {**env, "COLUMNS": "200"})
    return done.returncode, done.stdout + done.stderr


async def test_prefixes_listing_jobs_and_logs(env: dict[str, str], store: Store) -> None:
    await write_documents(store)

    code, shown = rea(["status", "3f2a91c0d"], env)
    assert code == 0, shown
    assert f"{CAMPAIGN} crosses for the movie ranker: running, phase combination" in shown
    code, shown = rea(["status", "3f2a"], env)
    assert code == 1
    assert "matches several campaigns" in shown and CAMPAIGN in shown and TWIN in shown
    code, shown = rea(["status", "zzz"], env)
    assert (code, shown.strip()) == (1, "no campaign matches 'zzz'")

    code, listed = rea(["status"], env)
    assert code == 0, listed
    assert "3f2a91c0d " in listed and "3f2a91c0f " in listed  # short, and unique
    assert "84.5 / 600" in listed and "+3.2%" in listed and "combination" in listed
    assert "9b1e0c2d" not in listed
    code, listed = rea(["status", "--all", "--wide"], env)
    assert code == 0, listed
    assert CAMPAIGN in listed and TWIN in listed and REJECTED in listed and "a typo" in listed

    code, table = rea(["jobs", "3f2a91c0d"], env)
    assert code == 0, table
    assert "validation-lr_up-s0" in table and "learning_rate=0.003" in table and "nan" in table
    assert "cross_layers=2 fm=True" in table
    code, out = rea(["jobs", "3f2a91c0d", "--json"], env)
    rows = {row["job_id"]: row for row in json.loads(out)}
    assert rows[FAILED_JOB]["failure"] == "nan"
    assert rows[f"{CAMPAIGN}-combination-dcn_v2+fm-s0"]["changes"] == {"cross_layers": 2, "fm": True}

    code, logged = rea(["logs", "3f2a91c0d-validation-lr_up"], env)
    assert code == 0, logged
    assert FAILED_JOB in logged and "worker w-1" in logged and "CPU-s 4.0" in logged
    assert "failure   nan: loss became NaN at epoch 2" in logged
    assert "FloatingPointError: loss became NaN" in logged
    code, logged = rea(["logs", f"{CAMPAIGN}-combination-dcn_v2+wd"], env)
    assert code == 0, logged
    assert "No output kept: no worker has started this job (it is pending)." in logged
    code, logged = rea(["logs", f"{CAMPAIGN}-validation"], env)
    assert code == 1 and "matches several jobs" in logged
    code, logged = rea(["logs", "3f2a91c0d-nothing"], env)
    assert (code, logged.strip()) == (1, "no job matches '3f2a91c0d-nothing'")
