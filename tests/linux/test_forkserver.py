"""The fork server (nspawn/backends/linux/forkserver.py) makes each container's first process
for a batch: the launcher does not fork, the container's first process is still the launcher's
child, the server keeps none of a run's descriptors, a launch it cannot serve fails that run
alone, a server that ended leaves the runs to the launcher's own fork, and a launcher killed
outright takes the server with it."""

from __future__ import annotations

import errno
import fcntl
import marshal
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

from nspawn.backends.linux import forkserver, init
from nspawn.backends.linux.forkserver import ForkServer
from nspawn.launch import run as launch_run
from nspawn.records import record, to_plain
from tests.linux.conftest import ROOT, config, container_processes, leftovers, needs_root, run, sh

pytestmark = needs_root

FORKS: list[int] = []  # the forks this process makes (os.fork, and clone3 through libc)
os.register_at_fork(before=lambda: FORKS.append(1))


@pytest.fixture
def server():
    made = ForkServer()
    yield made
    made.close()


def _descriptors(pid: int) -> dict[str, str]:
    held = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass
    return held


def test_the_launcher_does_not_fork_and_the_container_runs_as_before(clean, server):
    before = len(FORKS)
    r = run(sh("echo pid $$; cat /proc/self/cgroup >/dev/null && echo limited", max_ram_mb=64))
    assert (r.code, r.out) == (0, "pid 2\nlimited\n"), r.err
    assert len(FORKS) == before, "the launcher forked although the server serves it"
    server.close()
    r = run(sh("echo pid $$"))
    assert (r.code, r.out) == (0, "pid 2\n") and len(FORKS) > before, "without the server the launcher forks"


def test_the_server_runs_this_nspawn_whatever_its_working_directory_holds(clean, tmp_path, monkeypatch):
    """Started where another `nspawn` would be found first (a checkout, a different version),
    the server still runs the launcher's own: a Launch means what this code's records say."""
    other = tmp_path / "nspawn"
    other.mkdir()
    (other / "__init__.py").write_text("raise ImportError('not the launcher\'s nspawn')\n")
    monkeypatch.chdir(tmp_path)
    made = ForkServer()
    try:
        before = len(FORKS)
        r = run(sh("echo served"))
        assert (r.code, r.out) == (0, "served\n") and len(FORKS) == before, "the server did not serve"
    finally:
        made.close()


def test_the_first_process_is_the_launcher_s_child_and_the_exit_status_comes_through(clean, server):
    parents = []

    def listener(event, details):
        if event == "process":  # the container's init: its parent is A
            with open(f"/proc/{details['pid']}/stat") as f:
                a = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{a}/stat") as f:
                parents.append(int(f.read().rsplit(")", 1)[1].split()[1]))

    result = launch_run(config(sh("sleep 0.3; exit 7")), listener=listener)
    assert result.exit_code == 7 and parents == [os.getpid()]


def _runs_at_once(count: int, overrides: dict) -> list:
    """`count` runs on threads of their own; a run that hangs (a copy of its report pipe held
    elsewhere keeps its end of file away) is missing from the list after a minute."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(run(overrides)), daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results


def test_the_server_keeps_no_descriptor_of_a_run(clean, server):
    assert [r.code for r in _runs_at_once(1, sh("true"))] == [0]  # the server is up and has served once
    held = _descriptors(server.pid)
    results = _runs_at_once(6, sh("echo x; echo y >&2", max_ram_mb=64))
    assert [(r.code, r.out, r.err) for r in results] == [(0, "x\n", "y\n")] * 6
    assert _descriptors(server.pid) == held


@record
class Stray:  # a record the server's interpreter has never heard of
    name: str


def _stray_launch(report_w: int, status_w: int) -> init.Launch:
    """A launch naming the two pipes' ends, with a plan that is a Stray."""
    return init.Launch(plan=Stray("x"), launcher_pid=os.getpid(), cgroup_v2=None, cgroup_joins=[], cgroup_view=[],
                       scratch="/nonexistent", lower_tree=None, hide=None, binds=[], report_w=report_w,
                       status_w=status_w, output_w=None, oom_score_adj="0", cap_last=40, max_fd=1024, fail_at=None)


def test_a_launch_the_server_cannot_read_fails_that_run_alone(clean, server):
    report_r, report_w = os.pipe()
    status_r, status_w = os.pipe()
    launch = _stray_launch(report_w, status_w)
    try:
        with pytest.raises(OSError, match="the fork server could not start the container: .*Stray"):
            server.spawn(launch)
    finally:
        for fd in (report_r, report_w, status_r, status_w):
            os.close(fd)
    before = len(FORKS)
    assert run(sh("echo still served")).out == "still served\n" and len(FORKS) == before


def test_descriptors_that_cannot_all_be_moved_are_all_closed(monkeypatch):
    """In the server, a launch whose descriptors cannot all be moved (EMFILE half-way) keeps
    none of them: one kept would hold that run's pipe open, and its launcher would wait for an
    end of file that never comes."""
    report_r, report_w = os.pipe()
    status_r, status_w = os.pipe()
    launch = _stray_launch(report_w, status_w)
    calls = []

    def fails_second(fd, command, arg=0):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        return fcntl.fcntl(fd, command, arg)

    monkeypatch.setattr(forkserver, "fcntl", types.SimpleNamespace(fcntl=fails_second,
                                                                   F_DUPFD_CLOEXEC=fcntl.F_DUPFD_CLOEXEC))
    try:
        held = set(os.listdir("/proc/self/fd"))
        received = [os.dup(report_w), os.dup(status_w)]  # as recvmsg gives them to the server
        with pytest.raises(OSError, match="Too many open files"):
            forkserver._fork_a(marshal.dumps(to_plain(launch)), received, 0)
        assert len(calls) == 2 and set(os.listdir("/proc/self/fd")) == held
    finally:
        for fd in (report_r, report_w, status_r, status_w):
            os.close(fd)


def test_a_launch_larger_than_the_server_takes_is_forked_in_the_launcher(clean, server):
    before = len(FORKS)
    big = {f"BIG{i}": "x" * 50_000 for i in range(4)}  # each within the kernel's 128 KiB a string
    r = run(sh('echo ${#BIG0} ${#BIG3}', environment=big))
    assert (r.code, r.out) == (0, "50000 50000\n") and len(FORKS) > before
    before = len(FORKS)
    assert run(sh("echo small")).out == "small\n" and len(FORKS) == before  # the server still serves


class _Boom(BaseException):
    pass


class _RaisingOnAnswer:
    """The server's socket, as seen by a launcher whose signal handler raises while it waits
    for the answer."""

    def __init__(self, real):
        self._real = real

    def recv(self, size):
        raise _Boom()

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_launch_abandoned_before_its_answer_ends_the_server_and_its_container(clean, server, _scratch):
    server._socket = _RaisingOnAnswer(server._socket)
    with pytest.raises(_Boom):
        run(sh("echo should not run; sleep 30"))
    assert init.serving is None
    # The A forked for it is this process's child, and nobody else's to wait for: the server
    # killed it before it ended, so that it was gone before the run's rollback began.
    pid, status = os.waitpid(-1, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (pid, status)
    deadline = time.monotonic() + 10
    while (container_processes(str(_scratch)) or _alive(server.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container_processes(str(_scratch)) == [] and not _alive(server.pid)
    r = run(sh("echo forked here"))
    assert (r.code, r.out) == (0, "forked here\n")


def test_runs_go_on_in_the_launcher_when_the_server_has_ended(clean, server):
    os.kill(server.pid, signal.SIGKILL)
    before = len(FORKS)
    r = run(sh("echo forked here"))
    assert (r.code, r.out) == (0, "forked here\n") and len(FORKS) > before
    assert init.serving is None
    server.close()  # reaps it; the fixture's close after is a no-op


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_a_launcher_killed_outright_takes_the_server_and_its_containers_with_it(tmp_path, _scratch):
    configs = tmp_path / "configs"
    configs.mkdir()
    for i in range(2):
        (configs / f"slow{i}.json").write_text(
            '{"process_executable": "/bin/sh", "process_arguments": ["-c", "echo started; sleep 60"]}')
    batch = subprocess.Popen([sys.executable, "-m", "nspawn", "batch", str(configs), "-j", "2"], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = 0
    for line in batch.stderr:
        started += "start       slow" in line
        if started == 2:
            break
    # The containers' first processes are forks of the server, children of the batch too, each
    # with a session of its own; the server has only a process group of its own.
    servers = [p for p in _children(batch.pid)
               if b"forkserver" in open(f"/proc/{p}/cmdline", "rb").read() and os.getsid(p) != p]
    assert len(servers) == 1
    batch.kill()
    batch.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(servers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(servers[0]), "the server outlived its launcher"
    while container_processes(str(_scratch)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container_processes(str(_scratch)) == []
    subprocess.run([sys.executable, "-m", "nspawn", "cleanup"], cwd=ROOT, check=True, capture_output=True)
    assert leftovers(str(_scratch), []) == []
