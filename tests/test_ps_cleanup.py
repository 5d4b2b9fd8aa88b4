"""`nspawn ps` and `nspawn cleanup` over journals, as a killed launcher leaves them."""

import json
import os
import subprocess
import sys

from conftest import nspawn


def leave_journal(state_dir, container_id, backend="hcs"):
    """A launcher that writes its journal and is then SIGKILLed."""
    script = (f"from pathlib import Path; from nspawn.journal import Journal; "
              f"j = Journal({container_id!r}, {backend!r}, Path({str(state_dir)!r}), source='job.json'); "
              f"print('ready', flush=True); import time; time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_ps_tells_running_from_orphaned_and_cleanup_removes_the_orphan(tmp_path):
    state = tmp_path / "state"
    env = {"NSPAWN_STATE_DIR": str(state)}
    running = leave_journal(state, "nspawn-a")
    killed = leave_journal(state, "nspawn-b")
    killed.kill()
    killed.wait()
    try:
        rows = [json.loads(line) for line in nspawn("ps", "--json", env=env).stdout.splitlines()]
        assert {(r["id"], r["state"]) for r in rows} == {("nspawn-a", "running"), ("nspawn-b", "orphaned")}
        assert all(r["source"] == "job.json" for r in rows)
        result = nspawn("cleanup", env=env)
        assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(state)) == ["nspawn-a.journal"]  # a live launcher's journal is left alone
    finally:
        running.kill()
        running.wait()
