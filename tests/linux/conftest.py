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


def run(overrides: dict, container_id: str | None = None) -> Run:
    """Run a container in this process, its output captured."""
    out, err, events = io.BytesIO(), io.BytesIO(), []
    result = launch_run(config(overrides), listener=lambda e, d: events.append((e, d)),
                        container_id=container_id or new_container_id(), stdout=out, stderr=err)
    return Run(result, out.getvalue(), err.getvalue(), events)


def sh(script: str, **overrides) -> dict:
    return {"process_executable": "/bin/sh", "process_arguments": ["-c", script], **overrides}


def pid_namespaces() -> dict[str, str]:
    """PID namespace -> a process in it, as "pid command"."""
    found = {}
    for ns in glob.glob("/proc/[0-9]*/ns/pid"):
        try:
            found.setdefault(os.readlink(ns), ns.split("/")[2] + " " + open(ns.replace("ns/pid", "cmdline")).read().replace("\0", " "))
        except OSError:
            pass
    return found


def leftovers(scratch_parent: str, pidns_before: dict[str, str]) -> list[str]:
    """What of any container is still on the host."""
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [f"mount: {line.strip()}" for line in f if "nspawn-" in line or scratch_parent in line]
    found += [f"cgroup: {p}" for p in glob.glob("/sys/fs/cgroup/**/nspawn-*", recursive=True)]
    found += [f"scratch: {p}" for p in glob.glob(os.path.join(scratch_parent, "*"))]
    found += [f"pid namespace: {ns} of {who}" for ns, who in pid_namespaces().items() if ns not in pidns_before]
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
    before = pid_namespaces()

    def check() -> list[str]:
        return leftovers(str(_scratch), before)

    yield check
    assert check() == []
