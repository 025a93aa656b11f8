"""Counting job executions from the workers' own logs, and the CPU each campaign's jobs used."""

from __future__ import annotations

import json
from pathlib import Path

from rea.executions import audit, executions_from_logs
from rea.ledger import JobRun


def line(event: str, job_id: str, pid: int, **fields: object) -> str:
    return json.dumps({"event": event, "job_id": job_id, "pid": pid, "level": "info", **fields})


def test_every_job_process_is_counted_and_one_started_twice_is_reported(tmp_path: Path) -> None:
    (tmp_path / "worker-0.log").write_text(
        "\n".join(
            [
                line("job_process_started", "c1-a", 10),
                '{"event": "job_finished", "job_id": "c1-a"}',
                line("job_process_ended", "c1-a", 10, cpu_seconds=4.0),
                "not json at all: a crash's traceback",
                line("job_process_started", "c1-b", 11),  # its worker died: no end line
            ]
        )
    )
    (tmp_path / "worker-1.log").write_text(
        "\n".join(
            [line("job_process_started", "c1-a", 20), line("job_process_ended", "c1-a", 20, cpu_seconds=3.5)]
        )
    )
    (tmp_path / "executor.log").write_text(line("job_process_started", "c1-z", 1))  # not a worker's
    executions = executions_from_logs(tmp_path)
    assert sorted((e.job_id, e.pid, e.cpu_seconds) for e in executions) == [
        ("c1-a", 10, 4.0),
        ("c1-a", 20, 3.5),
        ("c1-b", 11, None),
    ]
    runs = [
        JobRun(job_id="c1-a", campaign_id="c1", cpu_seconds=4.0),
        JobRun(job_id="c1-b", campaign_id="c1", cpu_seconds=2.25),  # its last sample
    ]
    measured = audit(executions, runs)
    assert measured.repeated() == {"c1-a": 2}
    assert measured.unfinished == 1
    assert measured.cpu_by_campaign == {"c1": 4.0 + 3.5 + 2.25}


def test_no_logs_no_executions(tmp_path: Path) -> None:
    measured = audit(executions_from_logs(tmp_path), [])
    assert measured.executions == [] and measured.repeated() == {} and measured.cpu_by_campaign == {}
