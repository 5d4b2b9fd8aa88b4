"""The container's stdio on the launcher's side: which stdin is forwarded, decided by the
handle's file type as on Windows, and a forwarder that never holds up the teardown."""

from __future__ import annotations

import os

import pytest

from nspawn.backends.hcs import stdio
from tests.hcs.conftest import host  # noqa: F401 (fixture)
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)


@pytest.fixture
def windows_fstat(monkeypatch):
    """os.fstat and os.stat as CPython answers them on Windows: device and inode 0 for every
    handle that is not a disk file (the null device and pipes alike)."""
    real_fstat, real_stat = os.fstat, os.stat

    def blind(st):
        import stat

        if stat.S_ISREG(st.st_mode):
            return st
        fields = list(st)
        fields[1] = fields[2] = 0  # st_ino, st_dev
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", lambda fd: blind(real_fstat(fd)))
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: blind(real_stat(path, *a, **k)))


def _as_stdin(fd: int):
    saved = os.dup(0)
    os.dup2(fd, 0)
    return saved


@pytest.mark.parametrize("kind, forwarded", [("pipe", True), ("file", True), ("null", False)])
def test_stdin_is_forwarded_by_its_file_type(sim, windows_fstat, tmp_path, kind, forwarded):
    if kind == "pipe":
        fd, w = os.pipe()
        os.close(w)
    elif kind == "file":
        (tmp_path / "in").write_text("x")
        fd = os.open(tmp_path / "in", os.O_RDONLY)
    else:
        fd = os.open(os.devnull, os.O_RDONLY)
    saved = _as_stdin(fd)
    try:
        assert stdio.stdin_has_input() is forwarded
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(fd)
    assert sim.calls("kernel32!GetFileType")

def test_a_write_the_container_never_reads_does_not_hold_up_the_teardown(host):
    """The payload's child keeps its stdin open and never reads it; the payload exits only once
    the simulator says the launcher's write to that full pipe is held up (it appends to the
    file NSPAWN_HCS_SIM_BLOCKED_WRITES names as the write starts waiting), so the forwarder
    holds its lock in a write that nothing will finish while the container runs. A stop that
    waited for that write would never return (this run would not end before the harness's
    timeout); the bounded one gives up after a second and ending the silo breaks the write off."""
    marks = host.tmp / "blocked-writes"
    host.script("unread.sh", f"""exec 3<&0
sleep 300 <&3 >/dev/null 2>&1 &
exec 3<&- 0</dev/null
n=0
until [ -s '{marks}' ]; do
    n=$((n + 1)); [ $n -gt 6000 ] && exit 7  # the launcher never blocked: not this test's case
    sleep 0.01
done
exit 5
""")
    run = host.run(process_executable="unread.sh", input="x" * 4_000_000,
                   env={"NSPAWN_HCS_SIM_BLOCKED_WRITES": str(marks)})
    assert run.returncode == 5, run.stderr
    assert marks.read_text().startswith("blocked write on ")
    # The stdin handle is left to the launcher's exit (never closed under the blocked writer):
    # the one thing the simulator still counts when the launcher ends, with the blocked write's
    # own event where the launcher ended before that write was broken off (a loaded host); the
    # system is gone.
    left = dict(run.live)
    assert left.pop("handles", {}) in ({}, {"event": 1}), run.live
    assert list(left) == ["pipes"] and len(left["pipes"]) == 1, run.live
    assert run.errors == [], run.errors


def test_the_stop_thread_fails_over_to_the_kill_when_the_signal_cannot_be_sent():
    """A missing export (LibraryUnavailable) in the stop thread marks the stop failed, so the
    kill comes at once instead of after the whole grace."""
    from nspawn.backends.hcs.native.errors import MissingExport
    from nspawn.backends.hcs.runtime import _Stopper

    class Process:
        def signal(self, name):
            raise MissingExport("computecore.dll", "HcsSignalProcess")

    stopper = _Stopper(Process(), "CtrlShutdown")
    stopper.join()
    assert stopper.failed
