"""`nspawn ps` and `nspawn cleanup` over journals, as a killed launcher leaves them, and over
what a backend's host service keeps (nspawn/maintenance.py)."""

import json
import os
import subprocess
import sys
import types

import pytest

from tests.conftest import nspawn
from nspawn import backends, maintenance
from nspawn.backends import Backend
from nspawn.errors import LaunchError
from nspawn.journal import Journal
from nspawn.maintenance import RELEASE, SWEEP, TERMINATE, Check, Container, Step


def leave_journal(state_dir, container_id, backend="hcs", **header):
    """A launcher that writes its journal and is then SIGKILLed."""
    script = (f"from pathlib import Path; from nspawn.journal import Journal; "
              f"j = Journal({container_id!r}, {backend!r}, Path({str(state_dir)!r}), source='job.json', **{header!r}); "
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


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def service(monkeypatch):
    """A registry of two fake backends: `svc`, whose host service runs compute systems sys-1
    (terminated), sys-2 (refuses) and nspawn-a (a live launcher's) and whose sweep removes one
    layer and fails on another; and `plain`, without host_service, whose module would list a
    system if it were (wrongly) asked."""
    terminated = []

    def terminate_owned(id):
        if id == "sys-2":
            raise LaunchError("access denied")
        terminated.append(id)

    def sweep(live_ids):
        assert live_ids == {"nspawn-a"}
        error = LaunchError("not removed: layer y: in use")
        error.removed = ["layer x"]
        raise error

    def release(data):
        if data.get("fail"):
            raise OSError("busy")

    svc = _module("fake_svc", RELEASERS={"thing": release}, terminate_owned=terminate_owned, sweep=sweep,
                  owned_systems=lambda: [{"id": "sys-1", "state": "Running"}, {"id": "sys-2"}, {"id": "nspawn-a"}])
    plain = _module("fake_plain", RELEASERS={}, owned_systems=lambda: [{"id": "not-asked"}])
    for module in (svc, plain):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(backends, "BACKENDS", {
        "svc": Backend("fake_svc", "posix", frozenset(), (), host_service=True),
        "plain": Backend("fake_plain", "posix", frozenset(), ()),
    })
    return terminated


def test_ps_and_cleanup_records_over_journals_and_a_host_service(service, tmp_path):
    live = Journal("nspawn-a", "svc", source="a.json")
    orphan = Journal("nspawn-b", "svc", source="b.json")
    orphan.record("thing", what="one")
    orphan.record("thing", what="two", fail=True)
    orphan.close()  # as a killed launcher leaves it: on disk, unlocked
    try:
        rows = maintenance.containers()
        assert all(row.started is not None for row in rows[:2]) and rows[2].started is None
        assert [row._replace(started=None) for row in rows] == [
            Container("nspawn-a", "svc", os.getpid(), maintenance.RUNNING, "a.json", []),
            Container("nspawn-b", "svc", os.getpid(), maintenance.ORPHANED, "b.json", ["thing one", "thing two"]),
            Container("sys-1", "svc", None, maintenance.UNJOURNALED, None, ["compute system (Running)"]),
            Container("sys-2", "svc", None, maintenance.UNJOURNALED, None, ["compute system (unknown state)"]),
        ]
        steps = list(maintenance.cleanup())
    finally:
        live.close(remove=True)
    assert steps == [
        Step(RELEASE, "nspawn-b", "thing one"),
        Step(RELEASE, "nspawn-b", "thing two: busy", ok=False),
        Step(TERMINATE, "sys-1", ""),
        Step(TERMINATE, "sys-2", "access denied", ok=False),
        Step(SWEEP, None, "not removed: layer y: in use", ok=False),
        Step(SWEEP, None, "layer x"),
    ]
    assert [step.line for step in steps] == [
        "nspawn-b: released thing one", "nspawn-b: not released: thing two: busy",
        "sys-1: terminated its compute system", "sys-2: not terminated: access denied",
        "not removed: layer y: in use", "removed layer x",
    ]
    assert service == ["sys-1"]


def test_doctor_records_come_from_the_chosen_backend(monkeypatch):
    monkeypatch.setattr(backends, "host_default", lambda: "linux")
    monkeypatch.setattr(backends.load("linux"), "doctor", lambda config: [("namespaces", True, "user, pid, mount")])
    assert maintenance.doctor() == [Check("namespaces", True, "user, pid, mount")]


def test_ps_prints_its_header_when_nothing_runs(tmp_path):
    ran = nspawn("ps", env={"NSPAWN_STATE_DIR": str(tmp_path / "empty")})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["ID", "STATE", "BACKEND", "PID", "AGE", "COMMAND", "SOURCE"]
    assert nspawn("ps", "--json", env={"NSPAWN_STATE_DIR": str(tmp_path / "empty")}).stdout == ""


def test_ps_shows_the_command_and_the_age(tmp_path):
    state = tmp_path / "state"
    env = {"NSPAWN_STATE_DIR": str(state)}
    running = leave_journal(state, "nspawn-a", command=["/bin/sleep", "100", "two words"])
    orphan = leave_journal(state, "nspawn-b")
    orphan.kill()
    orphan.wait()
    try:
        lines = nspawn("ps", env=env).stdout.splitlines()
        rows = [json.loads(line) for line in nspawn("ps", "--json", env=env).stdout.splitlines()]
    finally:
        running.kill()
        running.wait()
    assert lines[0].split() == ["ID", "STATE", "BACKEND", "PID", "AGE", "COMMAND", "SOURCE"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert "/bin/sleep 100 'two words'" in by_id["nspawn-a"] and "job.json" in by_id["nspawn-a"]
    assert by_id["nspawn-a"].index("/bin/sleep") == lines[0].index("COMMAND")  # in its column
    assert by_id["nspawn-b"].split()[5] == "-"  # a journal that names no command
    json_by_id = {r["id"]: r for r in rows}
    assert json_by_id["nspawn-a"]["command"] == ["/bin/sleep", "100", "two words"]
    assert json_by_id["nspawn-b"]["command"] is None
    assert all(0 <= r["age_seconds"] < 60 and r["started"] for r in rows)


def test_ps_age_column():
    from nspawn.cli.ps import age

    assert [age(s) for s in (None, 0, 59.9, 61, 3600 + 5 * 60, 2 * 86400 + 3 * 3600)] == \
        ["-", "0s", "59s", "1m01s", "1h05m", "2d03h"]


def test_a_full_state_directory_leaves_no_journal_and_cleanup_survives_an_empty_one(tmp_path):
    """A launcher whose journal cannot take its first line (here RLIMIT_FSIZE, as a full disk)
    leaves no file; a journal found empty (as an older launcher left one) is removed by cleanup,
    which goes on to release the other orphans, and ps lists it without failing."""
    state = tmp_path / "state"
    script = ("import resource, sys; from pathlib import Path; from nspawn.journal import Journal\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))\n"
              f"try:\n    Journal('nspawn-full', 'linux', Path({str(state)!r}))\n"
              "except OSError as e:\n    print(e)\n")
    said = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "cannot write the journal" in said and os.listdir(state) == []
    (state / "nspawn-empty.journal").write_text("")
    killed = leave_journal(state, "nspawn-b", backend="linux")
    killed.kill()
    killed.wait()
    env = {"NSPAWN_STATE_DIR": str(state)}
    rows = [json.loads(line) for line in nspawn("ps", "--json", env=env).stdout.splitlines()]
    assert {r["id"] for r in rows} == {"nspawn-empty", "nspawn-b"}
    result = nspawn("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert os.listdir(state) == []
