"""`rea up` / `rea submit` / `rea status` / `rea approve` / `rea proposal` / `rea down`, the way a
person drives a detached embedded stack from a shell."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from rea_tools.stack import StackState

from .helpers import FAST_DATASET, run_rea

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n"


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_person_runs_a_campaign_from_the_shell(tmp_path: Path) -> None:
    env = {"REA_HOME": str(tmp_path / "rea"), "REA_WORKERS": "1"}
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(
        f"name: from the shell\ngrant: shell\ndataset: '{FAST_DATASET}'\nbudget_cpu_seconds: 300\n"
        "max_hypotheses: 1\nconfirm_seeds: 2\nmax_exploitation_trials: 0\nbaseline: {epochs: 1}\n"
    )
    up = run_rea(["up"], env)
    assert up.returncode == 0, up.stderr
    state = StackState.read(tmp_path / "rea")
    assert state is not None
    assert {p.name for p in state.processes} == {
        "tansu",
        "secantusdb",
        "redis",
        "logger",
        "hypothesis",
        "planner",
        "executor",
        "kernel",
        "worker-0",
        "supervisor",
    }
    try:
        assert run_rea(["up"], env).returncode == 1  # one stack per home

        # An engineer grants the team access: no auto-approval, so every plan waits.
        grant = ["grant", "create", "--id", "shell", "--team", "ranking", "--workloads", "ranker,autoint"]
        grant += ["--datasets", "synthetic*", "--max-cpu-seconds", "300", "--by", "erin"]
        granted = run_rea(grant, env)
        assert granted.returncode == 0 and granted.stdout.strip() == "shell", granted.stderr
        listed = run_rea(["grant", "list"], env)
        assert listed.returncode == 0 and "shell" in listed.stdout and "erin" in listed.stdout

        submitted = run_rea(["submit", str(campaign)], env)
        assert submitted.returncode == 0, submitted.stderr
        campaign_id = submitted.stdout.strip()
        assert "awaiting_approval" in submitted.stderr  # the grant auto-approves nothing
        checklist = " ".join(submitted.stderr.split())
        for line in ("grant: shell (team ranking)", f"data: {FAST_DATASET}", "LLM: no", "generated code: no"):
            assert line in checklist, submitted.stderr

        assert run_rea(["approve", campaign_id, "--by", "bob"], env).returncode == 0
        status = {}
        for _ in range(240):
            status = json.loads(run_rea(["status", campaign_id, "--json"], env).stdout)
            if status["campaign"]["status"] == "completed":
                break
        assert status["campaign"]["status"] == "completed"
        assert status["campaign"]["approved_by"] == "bob"

        proposal = run_rea(["proposal", campaign_id, "--json"], env)
        assert proposal.returncode == 0
        result = json.loads(proposal.stdout)
        assert result["best"]["ne"] > 0 and result["baseline"]["ne"] > 0
        # The one hypothesis lost validation (2 jobs, one seed), or won it and both configs ran on
        # a second seed (4 jobs), where it was confirmed or the baseline won after all.
        confirmation = result["jobs_completed"] == 4
        assert result["jobs_completed"] in (2, 4)
        assert result["seeds"] == (2 if confirmation else 1)
        confirmed = result["best"]["hypothesis_id"] is not None
        assert confirmation or not confirmed
        shown = run_rea(["proposal", campaign_id], env)
        assert shown.returncode == 0 and "NE delta" in shown.stdout
        if confirmed:
            assert "95% CI" in shown.stdout
        if not confirmation:
            assert "95% CI" not in shown.stdout

        # The launch proposal, rendered by the planner when the campaign completed.
        page, folder = tmp_path / "proposal.html", tmp_path / "proposal"
        write = ["proposal", campaign_id, "--html", str(page), "--markdown", str(folder)]
        written = run_rea(write, env)
        for _ in range(60):
            if written.returncode == 0:
                break
            written = run_rea(write, env)
        assert written.returncode == 0, written.stderr
        sources = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page.read_text())
        assert len(sources) == 3
        assert all(base64.b64decode(source).startswith(PNG) for source in sources)
        plots = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (folder / "proposal.md").read_text())
        assert len(plots) == 3 and all((folder / plot).read_bytes().startswith(PNG) for plot in plots)

        assert run_rea(["accept", campaign_id, "--by", "carol"], env).returncode == 0
        for _ in range(120):
            status = json.loads(run_rea(["status", campaign_id, "--json"], env).stdout)
            if status["campaign"].get("accepted_by"):
                break
        assert status["campaign"]["accepted_by"] == "carol"

        # The trail: who granted, who approved, who accepted, each accepted by the services.
        trail = run_rea(["audit", campaign_id, "--json"], env)
        assert trail.returncode == 0, trail.stderr
        decisions = {
            (e["type"], e["decided_by"], e["verdict"]) for e in map(json.loads, trail.stdout.splitlines())
        }
        assert {
            ("grant.created", "erin", "accepted"),
            ("plan.approved", "bob", "accepted"),
            ("proposal.accepted", "carol", "accepted"),
        } <= decisions, decisions

        shown = run_rea(["grant", "show", "shell"], env)
        assert shown.returncode == 0 and "granted by erin" in shown.stdout, shown.stderr
        assert run_rea(["grant", "revoke", "shell", "--reason", "done", "--by", "erin"], env).returncode == 0
        assert "revoked by erin" in run_rea(["grant", "show", "shell"], env).stdout
        assert "shell" not in run_rea(["grant", "list"], env).stdout
        assert "revoked" in run_rea(["grant", "list", "--all"], env).stdout
    finally:
        down = run_rea(["down"], env)
    assert down.returncode == 0
    assert not any(is_running(p.pid) for p in state.processes)
    assert StackState.read(tmp_path / "rea") is None


def test_a_service_killed_under_rea_up_is_started_again_and_its_campaign_completes(tmp_path: Path) -> None:
    env = {"REA_HOME": str(tmp_path / "rea"), "REA_WORKERS": "1"}
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(
        f"name: survives\ngrant: survivors\ndataset: '{FAST_DATASET}'\nbudget_cpu_seconds: 300\n"
        "max_hypotheses: 2\nconfirm_seeds: 1\nmax_exploitation_trials: 0\nbaseline: {epochs: 1}\n"
    )
    assert run_rea(["up"], env).returncode == 0
    home = tmp_path / "rea"
    started = StackState.read(home)
    assert started is not None
    try:
        granted = run_rea(
            [
                *("grant", "create", "--id", "survivors", "--team", "ranking", "--workloads", "ranker"),
                *("--datasets", "synthetic*", "--max-cpu-seconds", "300", "--auto-approve-up-to", "300"),
            ],
            env,
        )
        assert granted.returncode == 0 and granted.stdout.strip() == "survivors", granted.stderr
        submitted = run_rea(["submit", str(campaign)], env)
        assert submitted.returncode == 0, submitted.stderr
        campaign_id = submitted.stdout.strip()
        executor = next(p for p in started.processes if p.name == "executor")
        os.kill(executor.pid, signal.SIGKILL)  # as the OS's OOM killer would

        status: dict[str, dict[str, object]] = {}
        for _ in range(300):
            status = json.loads(run_rea(["status", campaign_id, "--json"], env).stdout)
            if status["campaign"]["status"] in ("completed", "failed"):
                break
            time.sleep(1)
        assert status["campaign"]["status"] == "completed"  # nobody ran anything by hand

        now = StackState.read(home)
        assert now is not None
        restarted = next(p for p in now.processes if p.name == "executor")
        assert restarted.restarts == 1 and restarted.pid != executor.pid, restarted
        shown = run_rea(["status", "--stack", "--json"], env)
        assert shown.returncode == 0, shown.stderr
        rows = {row["name"]: row for row in json.loads(shown.stdout)}
        assert rows["executor"]["running"] and rows["executor"]["health"] == "ok", rows["executor"]
        assert all(row["running"] for row in rows.values()), rows
    finally:
        every = StackState.read(home) or started
        assert run_rea(["down"], env).returncode == 0
    assert not any(is_running(p.pid) for p in every.processes)
