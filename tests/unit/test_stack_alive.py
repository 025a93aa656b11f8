"""A stack whose processes were all killed is gone, even while the killed processes wait to be
reaped (an orphan's new parent may never wait for it)."""

from __future__ import annotations

import signal
import subprocess
import time

from rea.processes import is_zombie


def test_a_killed_process_not_yet_reaped_is_a_zombie_and_a_running_one_is_not() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not is_zombie(child.pid)
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not is_zombie(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_zombie(child.pid)
    finally:
        child.kill()
        child.wait()
