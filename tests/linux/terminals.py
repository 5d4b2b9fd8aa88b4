"""A launcher driven as a user at a terminal drives it: `nspawn run` in a session of its own whose
controlling terminal is a pseudo-terminal the test holds both ends of (the master to type and
read, the slave to look at the terminal's settings and at what waits in its input queue)."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from nspawn.backends.linux import hostview
from tests.linux.conftest import ROOT

PYTHON = os.path.realpath(sys.executable)  # the host's files are the container's lower layer
# ... its OS, that is: an interpreter installed under a directory the view hides (pyenv's under
# /root) is mapped in
SHOW_PYTHON = ("--bind", f"{sys.base_prefix}:{sys.base_prefix}:ro") if hostview.hides(PYTHON) else ()


class Launcher:
    def __init__(self, args: list[str], rows: int = 24, columns: int = 80, stdin=None, env=None):
        """`nspawn ARGS`, its stdin and stdout the terminal (stdin: another descriptor if
        given), its stderr a pipe, so that its messages are plain lines."""
        self.master, self.slave = os.openpty()
        self.resize(rows, columns)
        err_r, err_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                fcntl.ioctl(self.slave, termios.TIOCSCTTY, 0)
                os.dup2(self.slave if stdin is None else stdin, 0)
                os.dup2(self.slave, 1)
                os.dup2(err_w, 2)
                os.chdir(ROOT)
                os.execve(sys.executable, [sys.executable, "-m", "nspawn", *args], {**os.environ, **(env or {})})
            finally:
                os._exit(127)
        os.close(err_w)
        self.err = err_r
        self.shown = b""
        self.cursor = 0  # where the next expect looks from
        self.status = None

    def resize(self, rows: int, columns: int) -> None:
        """As a terminal emulator does: the kernel tells the foreground group (SIGWINCH)."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def settings(self) -> str:
        """`stty -a` of the launcher's terminal."""
        return subprocess.run(["stty", "-a"], stdin=self.slave, capture_output=True, text=True, check=True).stdout

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, wanted: bytes, timeout: float = 30) -> bytes:
        """What the terminal shows up to `wanted`, read until it appears after what was
        expected before."""
        start = self.cursor
        deadline = time.monotonic() + timeout
        while (at := self.shown.find(wanted, start)) < 0:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.master], [], [], left)[0], (wanted, self.shown, self.stderr())
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the slave is gone (the test holds one)
                chunk = b""
            assert chunk, (wanted, self.shown)
            self.shown += chunk
        self.cursor = at + len(wanted)
        return self.shown[start:self.cursor]

    def glance(self, seconds: float) -> bytes:
        """What the terminal shows within `seconds`, if anything (expect still looks at it)."""
        start = len(self.shown)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and select.select([self.master], [], [], left)[0]:
            self.shown += os.read(self.master, 65536)
        return self.shown[start:]

    def wait(self, timeout: float = 30) -> int:
        """The launcher's exit code, reading what it shows meanwhile."""
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(self.pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, ("the launcher did not end", self.shown, self.stderr())
            if select.select([self.master], [], [], 0.02)[0]:
                self.shown += os.read(self.master, 65536)
        self.status = done[1]
        while select.select([self.master], [], [], 0)[0]:
            self.shown += os.read(self.master, 65536)
        return os.waitstatus_to_exitcode(self.status)

    def stderr(self) -> str:
        data = b""
        while select.select([self.err], [], [], 0)[0] and (chunk := os.read(self.err, 65536)):
            data += chunk
        return data.decode(errors="replace")

    def pending_input(self) -> bytes:
        """What waits in the launcher's terminal's input queue, as if typed and not yet read."""
        saved = termios.tcgetattr(self.slave)
        raw = termios.tcgetattr(self.slave)
        raw[3] &= ~termios.ICANON
        raw[6][termios.VMIN], raw[6][termios.VTIME] = 0, 0
        termios.tcsetattr(self.slave, termios.TCSANOW, raw)
        try:
            return os.read(self.slave, 65536)
        except BlockingIOError:
            return b""
        finally:
            termios.tcsetattr(self.slave, termios.TCSANOW, saved)

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
        for fd in (self.master, self.slave, self.err):
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run(*argv: str, options: tuple[str, ...] = ()) -> list[str]:
    return ["run", *SHOW_PYTHON, *options, "--", *argv]
