"""Real container runs as root: helpers to run one and to check that nothing of it is left on
the host, judged from the system (mount table, cgroup trees, scratch dir, processes), never
from the journal."""

from __future__ import annotations

import glob
import io
import os
import sys

import pytest

from nspawn.config.resolve import load_config
from nspawn.launch import run as launch_run
from nspawn.session import new_container_id

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux namespaces and cgroups"),
    pytest.mark.skipif(sys.platform.startswith("linux") and os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture(autouse=True)
def _scratch(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("NSPAWN_SCRATCH_DIR", str(scratch))
    monkeypatch.delenv("NSPAWN_FAIL_AT", raising=False)
    return scratch


class Run:
    def __init__(self, result, out: bytes, err: bytes, events: list):
        self.result, self.out, self.err, self.events = result, out.decode(), err.decode(), events

    @property
    def code(self) -> int:
        return self.result.exit_code

    def warnings(self) -> list[str]:
        return [d["message"] for e, d in self.events if e == "warning"]


def config(overrides: dict):
    return load_config(None, overrides, host=True)


STARTED: list[str] = []  # container ids of the running test, for its leftover check


def run(overrides: dict, container_id: str | None = None) -> Run:
    """Run a container in this process, its output captured."""
    out, err, events = io.BytesIO(), io.BytesIO(), []
    container_id = container_id or new_container_id()
    STARTED.append(container_id)  # runs on several threads at once each keep their own id
    result = launch_run(config(overrides), listener=lambda e, d: events.append((e, d)),
                        container_id=container_id, stdout=out, stderr=err)
    return Run(result, out.getvalue(), err.getvalue(), events)


def sh(script: str, **overrides) -> dict:
    return {"process_executable": "/bin/sh", "process_arguments": ["-c", script], **overrides}


def container_processes(scratch_parent: str) -> list[str]:
    """Processes in another mount namespace whose mounts come from our scratch dir: containers
    of this test (other nspawn runs on the host use other scratch dirs)."""
    mine = os.readlink("/proc/self/ns/mnt")
    found = []
    for ns in glob.glob("/proc/[0-9]*/ns/mnt"):
        proc = os.path.dirname(os.path.dirname(ns))
        try:
            if os.readlink(ns) == mine:
                continue
            with open(f"{proc}/mountinfo") as f:
                if scratch_parent in f.read():
                    found.append(proc + " " + open(f"{proc}/cmdline").read().replace("\0", " "))
        except OSError:
            pass
    return found


def leftovers(scratch_parent: str, container_ids: list[str]) -> list[str]:
    """What of this test's containers is still on the host."""
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [f"mount: {line.strip()}" for line in f if scratch_parent in line]
    for cid in container_ids:
        found += [f"cgroup: {p}" for p in glob.glob(f"/sys/fs/cgroup/**/{cid}", recursive=True)]
    found += [f"scratch: {p}" for p in glob.glob(os.path.join(scratch_parent, "*"))]
    found += [f"container process: {p}" for p in container_processes(scratch_parent)]
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(f"child process: {raw.strip()[:80]}")
    return found


@pytest.fixture
def clean(_scratch):
    """Asserts after the test that its containers left nothing behind; yields the check."""
    STARTED.clear()

    def check() -> list[str]:
        return leftovers(str(_scratch), STARTED)

    yield check
    assert check() == []
