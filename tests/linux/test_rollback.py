"""Whatever stops a run — a failure at any setup step, a signal in any phase, the timeout, the
launcher being SIGKILLed — nothing of the container is left on the host afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from nspawn.backends import linux
from nspawn.journal import read_journals
from tests.linux.conftest import ROOT, STARTED, container_processes, needs_root, run, sh

pytestmark = needs_root

STEPS = ["scratch", "cgroups", "fork", "unshare", "fork-init", "join-cgroups", "mount-root", "etc-files", "mount-system",
         "bind-mounts", "detach-host-root", "user", "hostname", "loopback", "fork-payload", "exec-prepare", "exec"]


@pytest.fixture
def busy(tmp_path):
    """A config that makes every kind of resource: scratch, cgroups, bind mounts, an output file."""
    work = tmp_path / "work"
    work.mkdir()

    def make(script="echo ran", **more):
        return sh(script, process_directory=str(work), mapped_directory="/work", stdout_filename="log.txt",
                  max_ram_mb=64, max_processes=20, **more)

    make.work = work
    return make


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_each_setup_step_leaves_nothing(step, busy, monkeypatch, clean):
    monkeypatch.setenv("NSPAWN_FAIL_AT", step)
    r = run(busy())
    assert r.code == 125 and f"failure injected at {step}" in r.result.error
    assert r.result.rollback_failures == [] and "ran" not in r.out


@pytest.mark.parametrize("step", STEPS)
def test_a_signal_at_each_setup_step_leaves_nothing(step, busy, monkeypatch, clean):
    monkeypatch.setenv("NSPAWN_FAIL_AT", f"{step}:SIGTERM")
    r = run(busy("sleep 5"))
    assert r.result.interrupted_by == signal.SIGTERM
    assert r.code == 143 and r.result.rollback_failures == []
    assert r.result.timings.get("run", 0) < 4


def _signal_me_when(ready, signum: int) -> None:
    """Signal this process once the payload has made `ready` (its trap is set by then),
    however long the container took to start."""
    def wait() -> None:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    threading.Thread(target=wait, daemon=True).start()


def test_a_signal_while_running_stops_the_payload_politely(busy, clean):
    _signal_me_when(busy.work / "ready", signal.SIGTERM)
    r = run(busy("trap 'echo polite; exit 9' TERM; touch /work/ready; sleep 30 & wait"))
    assert r.code == 9 and r.out == "polite\n" and r.result.interrupted_by == signal.SIGTERM
    assert r.result.timings["run"] < 3


def test_a_payload_deaf_to_sigterm_is_killed_after_the_grace(busy, clean):
    _signal_me_when(busy.work / "ready", signal.SIGINT)
    r = run(busy("trap '' TERM INT; touch /work/ready; sleep 30", stop_grace_seconds=0.5))
    assert r.code == 137 and r.result.signal == 9 and r.result.interrupted_by == signal.SIGINT
    assert 0.5 <= r.result.timings["run"] < 3


def test_a_signal_during_rollback_does_not_cut_it_short(busy, monkeypatch, clean):
    release_scratch = linux.RELEASERS["scratch"]

    def interrupted_release(data):
        os.kill(os.getpid(), signal.SIGTERM)
        release_scratch(data)

    monkeypatch.setitem(linux.RELEASERS, "scratch", interrupted_release)
    r = run(busy())
    assert r.code == 128 + signal.SIGTERM and r.result.rollback_failures == [] and r.result.interrupted_by == signal.SIGTERM
    assert any(x.startswith("scratch") for x in r.result.rolled_back)


def test_the_timeout_stops_the_container_with_124(busy, clean):
    r = run(busy("sleep 30", timeout_seconds=0.3, stop_grace_seconds=1))
    assert r.code == 124 and r.result.timed_out and r.result.timings["run"] < 2
    assert r.result.one_line() == "the timeout expired; the container was stopped"


LAUNCHER = ("import json, sys\nfrom nspawn.config.resolve import load_config\nfrom nspawn.launch import run\n"
            "run(load_config(None, json.loads(sys.argv[1]), host=True))\n")
CLEANUP = ("from nspawn.journal import finish, read_journals\nfrom nspawn.backends.linux import RELEASERS\n"
           "for orphan in read_journals():\n    assert not orphan.alive\n    print(finish(orphan, RELEASERS).failed)\n")


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, **kw)


@pytest.mark.parametrize("step", ["running", "cgroups", "mount-system", "exec"])
def test_sigkill_of_the_launcher_then_cleanup_leaves_nothing(step, busy, monkeypatch, clean):
    env = dict(os.environ)
    if step != "running":
        env["NSPAWN_FAIL_AT"] = f"{step}:SIGKILL"
    launcher = _python(LAUNCHER, json.dumps(busy("echo up > /work/up; sleep 30")), env=env)
    deadline = time.monotonic() + 10
    while step == "running" and not (busy.work / "up").exists():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.01)
    if step == "running":
        launcher.kill()
    assert launcher.wait(10) == -signal.SIGKILL
    # The container dies with its launcher (PR_SET_PDEATHSIG), before any cleanup.
    while container_processes(os.environ["NSPAWN_SCRATCH_DIR"]):
        assert time.monotonic() < deadline, "the container outlived its launcher"
        time.sleep(0.01)
    STARTED.extend(orphan.container_id for orphan in read_journals())
    cleanup = _python(CLEANUP, stdout=subprocess.PIPE, text=True)
    out, _ = cleanup.communicate(timeout=20)
    assert cleanup.returncode == 0 and out.strip() == "[]", out
    assert os.listdir(os.environ["NSPAWN_STATE_DIR"]) == []


def test_runs_leave_no_descriptor_open_in_the_launcher(busy, monkeypatch, clean):
    before = sorted(os.listdir("/proc/self/fd"))
    run(busy())
    monkeypatch.setenv("NSPAWN_FAIL_AT", "mount-system")
    run(busy())
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_the_launcher_child_killed_from_outside_ends_as_a_kill(clean):
    """issue 11: SIGKILL to the container's first process (outside the container, the launcher's
    child) ended in exit 247 and "exit_code": -9; it is a kill, 137, as for the container's."""
    launcher = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "--json", "--", "/bin/sh", "-c",
                                 "echo ready; sleep 30"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert launcher.stdout.readline() == "ready\n"
    with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children") as f:
        first = int(f.read().split()[0])
    os.kill(first, signal.SIGKILL)
    out, _ = launcher.communicate(timeout=20)
    result = json.loads(out.splitlines()[-1])
    STARTED.append(result["container_id"])
    assert launcher.returncode == 137
    assert (result["exit_code"], result["signal"]) == (137, 9)
