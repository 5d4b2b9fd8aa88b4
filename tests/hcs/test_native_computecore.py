"""computecore.dll (v2) bindings against the simulator."""

from __future__ import annotations

import gc
import json
import threading

import pytest

from nspawn.backends.hcs.native import computecore as cc
from nspawn.backends.hcs.native import kernel32
from nspawn.backends.hcs.native.errors import HcsError, is_already_stopped, is_not_found
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)

HELLO = "#!/bin/sh\necho \"hello $1 from $PWD\"\necho \"to stderr\" >&2\nexit 7\n"


def document(host_dir, terminate_on_close=True):
    return {
        "Owner": "nspawn",
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "ShouldTerminateOnLastHandleClosed": terminate_on_close,
        "Container": {"MappedDirectories": [
            {"HostPath": str(host_dir), "ContainerPath": "C:\\nspawn", "ReadOnly": False}]},
    }


@pytest.fixture
def workdir(tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text(HELLO)
    script.chmod(0o755)
    return tmp_path


def params(command_line, **extra):
    return {"CommandLine": command_line, "WorkingDirectory": "C:\\nspawn", "CreateStdInPipe": True,
            "CreateStdOutPipe": True, "CreateStdErrPipe": True, **extra}


def read_all(handle):
    chunks = []
    while chunk := kernel32.read(handle):
        chunks.append(chunk)
    return b"".join(chunks)


class Events:
    """Collects events and the threads they arrived on."""

    def __init__(self):
        self.items = []
        self.threads = set()
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.items.append(event)
            self.threads.add(threading.get_ident())
            self.cond.notify_all()

    def wait_for(self, type_, timeout=5):
        with self.cond:
            assert self.cond.wait_for(lambda: any(e.type == type_ for e in self.items), timeout), self.items
            return next(e for e in self.items if e.type == type_)


def test_run_process_end_to_end(sim, workdir):
    system = cc.create_compute_system("c1", document(workdir))
    sys_events = Events()
    system.set_callback(sys_events)
    system.start()
    process = system.create_process(params('C:\\nspawn\\hello.sh "big world"', Environment={"GREETING": "x"}))
    proc_events = Events()
    process.set_callback(proc_events)
    gc.collect()  # nothing native code can call may depend on a collectable object
    assert process.pid > 0
    assert read_all(process.stdout) == f"hello big world from {workdir}\n".encode()
    assert read_all(process.stderr) == b"to stderr\n"
    exited = proc_events.wait_for(cc.EVENT_PROCESS_EXITED)
    assert exited.document()["ExitCode"] == 7
    assert threading.get_ident() not in proc_events.threads
    assert process.properties()["ExitCode"] == 7
    process.close()
    system.shutdown()
    assert sys_events.wait_for(cc.EVENT_SYSTEM_EXITED).document()["ExitType"] == "GracefulExit"
    system.close()
    assert sim.live() == {}
    created = sim.documents("computecore!HcsCreateComputeSystem")
    assert created == [document(workdir)]
