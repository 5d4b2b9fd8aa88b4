"""Ctrl-C typed on the launcher's terminal ends the run with the payload's own code, as the README
promises. With pipes (--no-tty) the terminal sends SIGINT to the launcher, which passes it on
(the container is in a session of its own); with the payload's own terminal, Ctrl-C is a byte
that terminal turns into SIGINT for the payload. Driven through a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

from tests.linux.conftest import ROOT, needs_root
from tests.linux.terminals import PYTHON, SHOW_PYTHON

pytestmark = needs_root

# The payloads print "ready" once their handling of SIGINT is in place, from the process that
# gets the Ctrl-C: a shell's `echo ready; sleep 100` could be typed at between the two, where
# the shell itself holds the signal back until sleep ends, as it would outside a container.
DIES = [PYTHON, "-c", "import time; print('ready', flush=True); time.sleep(100)"]
TRAPS = [PYTHON, "-c", "import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(3)); "
                       "print('ready', flush=True); time.sleep(100)"]
SHELL_TRAPS = ["/bin/sh", "-c", "trap 'exit 3' INT; echo ready; while :; do sleep 0.1; done"]


def _read(fd: int, until: bytes | None, deadline: float) -> bytes:
    """What the terminal shows until `until` appears (None: until the launcher closes it)."""
    seen = b""
    while until is None or until not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every process holding the terminal has ended
            break
        if not chunk:
            break
        seen += chunk
    return seen


def ctrl_c(argv: list[str], options: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """Run `nspawn run -- ARGV` on a pseudo-terminal of its own (its session and controlling
    terminal), type Ctrl-C once the payload says "ready"; (exit code, terminal text, stderr).
    The launcher's stderr is a pipe, so that its messages are plain lines."""
    err_r, err_w = os.pipe()
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.dup2(err_w, 2)
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "nspawn", "run", *SHOW_PYTHON, *options, "--", *argv])
        finally:
            os._exit(127)
    os.close(err_w)
    done = (0, 0)
    try:
        shown = _read(fd, b"ready", time.monotonic() + 30)
        assert b"ready" in shown, shown
        os.write(fd, b"\x03")
        shown += _read(fd, None, time.monotonic() + 30)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the launcher did not end after Ctrl-C"
            time.sleep(0.01)
        stderr = _read(err_r, None, time.monotonic() + 5).decode(errors="replace")
    finally:
        os.close(fd)
        os.close(err_r)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(done[1]), shown.decode(errors="replace"), stderr


@pytest.mark.parametrize("options", [("--no-tty",), ()], ids=["pipes", "pty"])
@pytest.mark.parametrize(("argv", "code"), [(DIES, 128 + signal.SIGINT), (TRAPS, 3), (SHELL_TRAPS, 3)],
                         ids=["dies-of-sigint", "traps-and-exits-3", "shell-traps-and-exits-3"])
def test_ctrl_c_on_the_terminal_ends_with_the_payloads_own_code(argv, code, options, clean):
    for _ in range(3):  # the race this guards against lost most tries; three would see it
        got, shown, stderr = ctrl_c(argv, options)
        assert got == code, (shown, stderr)
        assert "error" not in stderr, stderr
        # The launcher is stopped by the signal only when the host terminal sent it one.
        assert ("stopped by signal 2" in stderr) == (options == ("--no-tty",)), stderr
        assert clean() == []
