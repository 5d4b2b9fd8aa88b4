"""computecore.dll (v2) bindings against the simulator."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from nspawn.backends.hcs.native import computecore as cc
from tests.conftest import skip_unless_ci
from nspawn.backends.hcs.native import kernel32
from nspawn.backends.hcs.native.errors import HcsError, is_already_stopped, is_not_found
from nspawn.backends.hcs.native.loader import SIMULATOR_ENV
from tests.conftest import ROOT
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)

# With WAIT set it ends only after its stdin does: its exit then comes after the callback is set
# (an exit before that sends no event, as on Windows).
HELLO = "#!/bin/sh\n[ -n \"$WAIT\" ] && read _\necho \"hello $1 from $PWD\"\necho \"to stderr\" >&2\nexit 7\n"


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


def sh(script):
    return subprocess.list2cmdline(["sh", "-c", script])


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
    process = system.create_process(params('C:\\nspawn\\hello.sh "big world"', Environment={"GREETING": "x", "WAIT": "1"}))
    proc_events = Events()
    process.set_callback(proc_events)
    process.close_stdin()
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
    assert sim.wait_clean() == {}
    created = sim.documents("computecore!HcsCreateComputeSystem")
    assert created == [document(workdir)]


@pytest.fixture
def running(sim, workdir):
    system = cc.create_compute_system("c1", document(workdir))
    system.start()
    yield system
    system.close()


def test_stdin_pipe_and_environment(running, sim):
    with running.create_process(params(sh('read line; echo "$line/$GREETING"'),
                                       Environment={"GREETING": "hi"})) as process:
        kernel32.write(process.stdin, b"ping\n")
        process.close_stdin()
        assert read_all(process.stdout) == b"ping/hi\n"
    running.terminate()
    running.close()
    assert sim.wait_clean() == {}


def test_overlapped_pipes_are_read_through_get_overlapped_result(running, sim):
    sim.overlapped_pipes()
    with running.create_process(params("C:\\nspawn\\hello.sh x")) as process:
        assert read_all(process.stdout).startswith(b"hello x")
    assert sim.ledger()["handles"].get("event") is None


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("call", ["HcsCreateComputeSystem", "HcsStartComputeSystem"])
def test_system_failures_carry_call_code_and_document(sim, workdir, call, mode):
    sim.fail(call, 0x80370101, mode, "The container OS does not match the host")
    with pytest.raises(HcsError) as info:
        system = cc.create_compute_system("c1", document(workdir))
        try:
            system.start()
        finally:
            system.close()
    e = info.value
    assert (e.call, e.hresult, e.name) == (call, 0x80370101, "HCS_E_IMAGE_MISMATCH")
    assert json.loads(e.document)["ErrorMessage"] == "The container OS does not match the host"
    assert e.message == f"{call} failed: 0x80370101 HCS_E_IMAGE_MISMATCH: The container OS does not match the host"
    assert sim.wait_clean() == {}


def test_duplicate_id_and_bad_json(sim, workdir):
    with cc.create_compute_system("c1", document(workdir)):
        with pytest.raises(HcsError) as info:
            cc.create_compute_system("C1", document(workdir))
        assert info.value.name == "HCS_E_SYSTEM_ALREADY_EXISTS"
    with pytest.raises(HcsError) as info:
        cc.create_compute_system("c2", "not json")
    assert info.value.name == "HCS_E_INVALID_JSON"
    assert sim.wait_clean() == {}


def test_hung_start_times_out_then_terminate_releases_it(sim, workdir):
    sim.hang("HcsStartComputeSystem")
    system = cc.create_compute_system("c1", document(workdir))
    events = Events()
    system.set_callback(events)
    with pytest.raises(HcsError) as info:
        system.start(timeout_ms=100)
    assert (info.value.call, info.value.name) == ("HcsStartComputeSystem", "HCS_E_OPERATION_TIMEOUT")
    system.terminate(wait_ms=5000)
    assert events.wait_for(cc.EVENT_SYSTEM_EXITED).document()["ExitType"] == "ForcedExit"
    with pytest.raises(HcsError) as info:
        system.terminate(wait_ms=5000)
    assert is_already_stopped(info.value)
    system.close()
    assert sim.wait_clean() == {}


def test_hung_create_is_released_by_closing_the_last_handle(sim, workdir):
    sim.hang("HcsCreateComputeSystem")
    with pytest.raises(HcsError) as info:
        cc.create_compute_system("c1", document(workdir), timeout_ms=50)
    assert info.value.name == "HCS_E_OPERATION_TIMEOUT"
    assert sim.wait_clean() == {}


def test_kill_through_fresh_handles_and_exit_code(running, sim):
    process = running.create_process(params("sleep 30"))
    events = Events()
    process.set_callback(events)
    with cc.open_compute_system("c1") as fresh, fresh.open_process(process.pid) as target:
        target.terminate()
    status = events.wait_for(cc.EVENT_PROCESS_EXITED).document()
    assert status["Exited"] and status["ExitCode"] == 128 + 9
    with pytest.raises(HcsError) as info:
        process.terminate()
    assert is_already_stopped(info.value) and info.value.name == "HCS_E_PROCESS_ALREADY_STOPPED"
    with pytest.raises(HcsError) as info:
        running.open_process(process.pid)
    assert is_not_found(info.value)
    process.close()


def test_signal_reaches_the_process(running):
    with running.create_process(params(sh('trap "exit 3" INT; while :; do sleep 0.05; done'))) as process:
        events = Events()
        process.set_callback(events)
        time.sleep(0.2)  # let the shell install its trap
        process.signal("CtrlC")
        assert events.wait_for(cc.EVENT_PROCESS_EXITED).document()["ExitCode"] == 3
        with pytest.raises(HcsError) as info:
            process.signal("NoSuchSignal")
        assert info.value.name == "ERROR_INVALID_PARAMETER"


def test_create_process_failures(running, sim):
    with pytest.raises(HcsError) as info:
        running.create_process(params("C:\\Windows\\System32\\cmd.exe /c dir"))
    assert (info.value.call, info.value.name) == ("HcsCreateProcess", "ERROR_FILE_NOT_FOUND")
    assert "cmd.exe" in info.value.message
    sim.fail("HcsCreateProcess", 0x80370105)
    with pytest.raises(HcsError) as info:
        running.create_process(params("true"))
    assert info.value.name == "HCS_E_INVALID_STATE"
    assert sim.ledger()["processes"] == []


def test_create_process_wait_failure_recovers_stdio(running, sim):
    sim.fail("HcsCreateProcess", 0x80070057, "async")
    with running.create_process(params("C:\\nspawn\\hello.sh again")) as process:
        assert read_all(process.stdout).startswith(b"hello again")
        assert process.pid > 0


def test_unrequested_streams_are_none(running):
    with running.create_process({"CommandLine": "true"}) as process:
        assert (process.stdin, process.stdout, process.stderr) == (None, None, None)


def test_enumerate(running, sim):
    with running.create_process(params("sleep 30")) as process:
        [listed] = cc.enumerate_compute_systems({"Owners": ["nspawn"]})
        assert listed["Id"] == "c1" and listed["State"] == "Running" and listed["Owner"] == "nspawn"
        assert cc.enumerate_compute_systems({"Owners": ["someone-else"]}) == []
        process.terminate()
    sim.fail("HcsEnumerateComputeSystems", 0x8037011B, "async")
    with pytest.raises(HcsError) as info:
        cc.enumerate_compute_systems()
    assert info.value.name == "HCS_E_ACCESS_DENIED"


def test_system_left_running_without_terminate_on_close_stays_in_ledger(sim, workdir):
    system = cc.create_compute_system("leak", document(workdir, terminate_on_close=False))
    system.start()
    system.close()
    assert [s["id"] for s in sim.live()["systems"]] == ["leak"]
    with cc.open_compute_system("leak") as again:  # what `nspawn cleanup` does
        again.terminate(wait_ms=5000)
    assert sim.wait_clean() == {}


def test_callback_handler_exception_is_contained_and_handler_dropped_on_close(running, caplog):
    def broken(event):
        raise RuntimeError("boom")

    before = len(cc.registry)
    process = running.create_process(params("true"))
    process.set_callback(broken)
    assert len(cc.registry) == before + 1
    deadline = time.monotonic() + 5
    while "boom" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "HCS callback handler failed" in caplog.text
    process.close()
    assert len(cc.registry) == before


def test_second_callback_on_a_handle_is_refused(running):
    running.set_callback(lambda e: None)
    with pytest.raises(HcsError) as info:
        running.set_callback(lambda e: None)
    assert info.value.name == "HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET"


def test_every_returned_string_was_freed_with_local_free(running, sim):
    with running.create_process(params("true")) as process:
        process.properties()
    cc.enumerate_compute_systems()
    led = sim.ledger()
    assert led["strings"] == 0 and led["free_errors"] == []


def close_during_callback(library: str, workdir: str) -> None:
    """Closes a process handle while its exit callback runs: the close waits for the callback,
    and the handle is freed once (a second free aborts this process)."""
    from tests.hcs_sim.ledger import Simulator

    sim = Simulator(library)
    entered, release = threading.Event(), threading.Event()

    def handler(event):
        entered.set()
        release.wait()

    with cc.create_compute_system("c1", document(workdir)) as system:
        system.start()
        process = system.create_process(params(sh("read _")))  # ends once its stdin does
        process.set_callback(handler)
        process.close_stdin()
        assert entered.wait(5)
        closer = threading.Thread(target=process.close)
        closer.start()
        while sim.ledger()["handles"].get("process"):  # unlinked: the closer waits for the callback
            time.sleep(0.01)
        release.set()
        closer.join()
        system.terminate(wait_ms=5000)
    assert sim.wait_clean() == {}


def address_sanitizer() -> str | None:
    """The compiler's AddressSanitizer runtime: preloaded, it catches a double free that glibc
    may let pass."""
    from tests.hcs_sim.build import compiler

    path = subprocess.run([compiler() or "cc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def test_a_handle_closed_during_its_callback_is_freed_once(sim_library, workdir):
    asan = address_sanitizer()
    if not asan:
        skip_unless_ci("no AddressSanitizer runtime beside the C compiler")
    code = ("import sys; from tests.hcs.test_native_computecore import close_during_callback; "
            "close_during_callback(*sys.argv[1:])")
    env = {**os.environ, SIMULATOR_ENV: str(sim_library), "LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0"}
    result = subprocess.run([sys.executable, "-c", code, str(sim_library), str(workdir)],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_process_that_never_started_is_not_asked_for_its_info(sim, tmp_path, workdir):
    """HcsCreateProcess answered S_OK without a handle and its operation failed: the error is
    the operation's, and HcsGetProcessInfo is never called with a NULL handle (the simulator
    lists such a call as a misuse, an access violation on Windows)."""
    system = cc.create_compute_system("c1", document(workdir))
    system.start()
    sim.fail("HcsCreateProcess", 0x80070002, "unstarted")
    with pytest.raises(HcsError) as info:
        system.create_process({"CommandLine": "C:\\nspawn\\hello.sh", "CreateStdOutPipe": True})
    assert info.value.call == "HcsCreateProcess" and info.value.win32 == 2
    assert not sim.calls("HcsGetProcessInfo")
    system.terminate(wait_ms=5000)
    system.close()
    assert sim.wait_clean() == {}
