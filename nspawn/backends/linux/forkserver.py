"""A small single-threaded process that makes the container's first process (A) for a launcher
running many containers from its threads (`nspawn batch`, `nspawn worker`: backends.many_runs).

Forking A from the launcher costs a batch twice: every fork marks the launcher's pages
copy-on-write, so its threads fault in again each page they write (750 faults a job), and each
fork copies a process holding the batch's threads, rich and click. The server is a fresh
interpreter holding only the run's modules, started once: a job's launcher thread sends it the
Launch (records.to_plain through marshal) with the descriptors the Launch names (SCM_RIGHTS).
The server forks A with CLONE_PARENT, so A is the launcher's child as a fork of the launcher's
would be (the launcher waits for it; its PR_SET_PDEATHSIG follows the launcher's thread), A
puts the descriptors at the numbers the Launch gives them, and the server closes its copies and
answers A's pid (or why it could not).

The server holds nothing of a run beyond that exchange. It dies with the launcher's thread that
started it (PR_SET_PDEATHSIG) and ends when the launcher closes its end. Should it end
earlier, init.start forks A in the launcher, as a single run does.
"""

from __future__ import annotations

import _signal as signal
import _socket
import _thread  # not threading: its at-fork handlers would run in every process the server forks
import array
import errno
import fcntl
import marshal
import os
import sys

from nspawn.backends.linux import init, libc
from nspawn.backends.linux import runtime  # noqa: F401 (every record class a Launch holds, for from_plain)
from nspawn.records import from_plain, to_plain

# The server runs this nspawn, wherever its interpreter would find another (its working
# directory, PYTHONPATH): a Launch means what this code's records say.
_HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_MAIN = ("import sys; sys.path.insert(0, sys.argv[1]); from nspawn.backends.linux.forkserver import main; "
         "main(*map(int, sys.argv[2:]))")
_MAX_FDS = 64  # of one Launch: its pipes, the lower layer, one per bind mount, the user namespace
# The largest Launch the server takes (marshalled: 12 KiB with the default seccomp program),
# within what a Unix socket's default send buffer lets one message hold; a larger one, or one
# naming more descriptors, is forked in the launcher.
_MESSAGE = 1 << 17
_ANSWER = 1 << 12


class ForkServer:
    """Started on a thread that outlives the runs (the batch's or the worker's main thread)."""

    def __init__(self) -> None:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            os.set_inheritable(theirs.fileno(), True)
            # A fresh interpreter, not a fork of this one: its pages are only the run's modules,
            # and it inherits no lock a thread of ours held. A process group of its own: a
            # Ctrl-C at the terminal is the launcher's to act on, not the server's.
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-c", _MAIN, _HOME, str(theirs.fileno()), str(os.getpid())],
                                      os.environ, setpgroup=0, setsigmask=())
        finally:
            theirs.close()
        self._socket = ours
        self._lock = _thread.allocate_lock()
        init.serving = self.spawn

    def spawn(self, launch: init.Launch) -> int | None:
        """A's pid, forked by the server for `launch`; None if the server has ended or cannot
        take `launch`."""
        message = marshal.dumps(to_plain(launch))
        fds = array.array("i", init.own_fds(launch))
        if len(message) > _MESSAGE or len(fds) > _MAX_FDS:
            return None
        with self._lock:
            if self._socket is None:
                return None
            try:
                self._socket.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
                answer = self._socket.recv(_ANSWER)
            except OSError as e:
                if e.errno == errno.EMSGSIZE:  # nothing sent: a host whose sockets' buffers are smaller than ours
                    return None
                self._end()
                if isinstance(e, (BrokenPipeError, ConnectionResetError)):
                    return None
                raise
            except BaseException:
                # Between the launch and its answer (a signal's handler raising): the next
                # launch would read this one's answer, so the server is ended instead, and
                # kills the A it may have forked for it, which nobody waits for.
                self._end()
                raise
            if not answer:
                self._end()
                return None
        value, error = marshal.loads(answer)  # (pid, None), or (errno, why)
        if error:
            raise OSError(value, error)
        return value

    def close(self) -> None:
        with self._lock:
            self._end()

    def _end(self) -> None:
        if init.serving == self.spawn:
            init.serving = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            os.waitpid(self.pid, 0)


def main(fd: int, launcher: int) -> None:
    """The server's process (ForkServer starts it): serve the launcher on the socket `fd`."""
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == launcher:  # else the launcher died before PDEATHSIG was armed
        _serve(_socket.socket(fileno=fd))


def _serve(channel) -> None:
    init.close_all_but((channel.fileno(),), os.sysconf("SC_OPEN_MAX"))
    while True:
        try:
            message, ancillary, _, _ = channel.recvmsg(_MESSAGE, _socket.CMSG_SPACE(_MAX_FDS * 4))
        except InterruptedError:
            continue
        if not message:
            return
        received = [fd for level, kind, data in ancillary if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
                    for fd in array.array("i", data[:len(data) - len(data) % 4])]
        try:
            answer = (_fork_a(message, received, channel.fileno()), None)
        except Exception as e:  # the launcher's thread says it; the server goes on serving
            answer = (getattr(e, "errno", None) or 0, f"the fork server could not start the container: {e}")
        try:
            channel.send(marshal.dumps(answer))
        except OSError:  # the launcher gave up on this launch (ForkServer.spawn)
            if answer[1] is None:
                os.kill(answer[0], signal.SIGKILL)
            return


def _fork_a(message: bytes, received: list[int], keep: int) -> int:
    """Fork A for the Launch in `message`, with `received` at the numbers it gives them
    (init.own_fds's order); holds none of them afterwards."""
    # Moved above every number the launch names (and our own), then placed in A, where a
    # number that is ours here may be taken. Every copy is closed here however this ends: one
    # left in the server would hold a run's pipe open, and its launcher would wait for an end
    # of file that never comes.
    moved: list[int] = []
    try:
        try:
            launch = from_plain(marshal.loads(message))
            wanted = init.own_fds(launch)
            above = max((keep, *wanted)) + 1
            for fd in received:
                moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above))
        finally:
            for fd in received:
                os.close(fd)
        if len(wanted) != len(moved):
            raise ValueError(f"{len(moved)} descriptors came for the {len(wanted)} the launch names")
        pid = libc.fork_for_parent()
        if pid == 0:
            try:
                for source, target in zip(moved, wanted):
                    os.dup2(source, target, inheritable=False)
            except BaseException as e:
                init.fail(launch, e)
            init.become_a(launch)  # closes what it does not keep: `moved` and our channel
        return pid
    finally:
        for fd in moved:
            os.close(fd)
