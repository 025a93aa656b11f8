"""Interrupted commands kill what they started, however deep: a job forked by a zygote that
was started before the interrupted block goes too, the zygote stays."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rea.processes import new_children_killed_on_error

FORKER = """
import os, sys, time
sys.stdin.readline()
job = os.fork()
if job == 0:
    os.setsid()
    time.sleep(60)
    os._exit(0)
print(job, flush=True)
os.waitpid(job, 0)
print("reaped", flush=True)
time.sleep(60)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.timeout(30)
def test_an_interrupted_block_kills_a_job_forked_below_a_process_started_before_it() -> None:
    forker = subprocess.Popen([sys.executable, "-c", FORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert forker.stdin is not None and forker.stdout is not None
    try:
        with pytest.raises(KeyboardInterrupt), new_children_killed_on_error():
            forker.stdin.write(b"fork\n")
            forker.stdin.flush()
            job = int(forker.stdout.readline())
            assert _running(job)
            raise KeyboardInterrupt
        assert forker.stdout.readline() == b"reaped\n"  # the job was killed, and its parent saw it
        time.sleep(0.1)
        assert forker.poll() is None, "the process started before the block was killed"
    finally:
        forker.kill()
        forker.wait()
