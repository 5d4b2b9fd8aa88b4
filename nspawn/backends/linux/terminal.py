"""The payload's pseudo-terminal, the launcher's side: whether a run gets one, the host terminal
set raw for the run and given back as it was however the run ends, and the bytes and window
sizes relayed. Imported only by runs that have a terminal (termios costs the others nothing).

The terminal itself is made by the container's init from the container's own devpts
(init._make_terminal): the payload never holds a descriptor of the host's terminal, and its
controlling terminal, which TIOCSTI and /dev/tty reach, is that one.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import termios
import threading
import tty

from nspawn.backends.linux.init import Terminal

_HELD = 1 << 20  # input read ahead of the payload, most: a stdin file is not read into memory whole


def host_terminal() -> int | None:
    """The launcher's terminal, whose size the payload's follows: stdin's, else stdout's."""
    return next((fd for fd in (0, 1) if os.isatty(fd)), None)


def in_foreground(fd: int) -> bool:
    """Whether this launcher is in the foreground of the terminal at `fd`: a background one
    must not take the keyboard, nor set the terminal raw (the kernel would stop it, SIGTTOU)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


def _size_of(fd: int | None) -> bytes:
    """struct winsize of a terminal (zeros for none), for init to set on the new one."""
    rows = columns = 0
    if fd is not None:
        rows, columns = termios.tcgetwinsize(fd)
    return struct.pack("HHHH", rows, columns, 0, 0)


def prepare() -> tuple[Terminal, int]:
    """The record init gets, and the launcher's end of the channel the master comes back on."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    return Terminal(channel=theirs, size=_size_of(host_terminal()), set_controlling=termios.TIOCSCTTY,
                    set_size=termios.TIOCSWINSZ), mine.detach()


def receive_master(channel: int) -> int | None:
    """The master init sent, or None when init ended before sending it (its report says why)."""
    sock = socket.socket(fileno=channel)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    finally:
        sock.detach()  # the descriptor stays the caller's to close
    return fds[0] if fds else None


class Relay:
    """Host terminal ⇄ master while the payload runs. The host terminal is raw meanwhile, so a
    typed Ctrl-C is a byte that the payload's terminal turns into SIGINT for its own foreground
    process group, once: neither the launcher nor the container's init gets a signal for it.
    `restore` gives the terminal back as it was."""

    def __init__(self, master: int):
        self.master = master
        os.set_blocking(master, False)  # input waits in `pending` rather than block the loop
        self.pending = b""  # input the master has not taken yet
        self.line_open = False  # the input relayed so far ends inside a line
        self._poller = None
        self._input = "unread"  # stdin: read, held (the payload is behind), ended, or unread
        self.terminal = host_terminal()
        self.saved = None
        self.resized = False
        self._previous_winch = None
        if self.terminal is not None and threading.current_thread() is threading.main_thread():
            self._previous_winch = signal.signal(signal.SIGWINCH, self._on_winch)
            self.resized = True  # it may have changed between init's setting it and now
        if os.isatty(0) and in_foreground(0):
            self.saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)  # TCSANOW: what was typed ahead is kept for the payload

    def _on_winch(self, signum, frame) -> None:
        self.resized = True

    def watch(self, poller) -> None:
        """Polls the launcher's stdin on `poller` (its events go to `on_input`)."""
        self._poller = poller
        if not os.isatty(0) or in_foreground(0):  # a background launcher reading it would be stopped (SIGTTIN)
            self._input = "read"
            poller.register(0, select.POLLIN)

    def tick(self) -> None:
        """Between polls: a new window size, and input the master could not take at once."""
        if self.resized:
            self.resized = False
            try:
                termios.tcsetwinsize(self.master, termios.tcgetwinsize(self.terminal))  # the kernel sends SIGWINCH
            except termios.error:
                pass  # the host terminal went away; its SIGHUP stops the run
        self._flush_input()

    def read_output(self, fd: int) -> bytes | None:
        """What the payload's terminal showed, up to 64 KiB (a pty hands out some 4 KiB a read:
        one poll per read would cost the relay most of its throughput); b"" once every holder
        of its slave is gone, None when nothing is waiting after all."""
        data = b""
        while len(data) < 65536:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the slave's last holder closed it
                    raise
                chunk = b""
            if not chunk:
                return data  # its end; what came before it first, and b"" on the next call
            data += chunk
        return data or None

    def on_input(self, events: int) -> None:
        """Takes what the launcher's stdin has. The end of a stdin that is not a terminal is
        the payload's terminal's end-of-file character (Ctrl-D), so that a payload reading it
        ends as it would on the pipe (in canonical mode, as a terminal's end of input is)."""
        data = b""
        if not events & select.POLLNVAL:
            try:
                data = os.read(0, 65536)
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the host terminal hung up
                    raise
        if data:
            self.pending += data
            self.line_open = not data.endswith(b"\n")
        else:
            self._poller.unregister(0)
            self._input = "ended"
            if not os.isatty(0):
                # A line not ended yet: the first VEOF hands it over, the second is the end.
                self.pending += termios.tcgetattr(self.master)[6][termios.VEOF] * (2 if self.line_open else 1)
        self._flush_input()

    def _flush_input(self) -> None:
        try:
            while self.pending:
                self.pending = self.pending[os.write(self.master, self.pending):]
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            self.pending = b""  # nobody is left to read it
        # Held back while the payload does not read: stdin is read again once it has caught up.
        if self._input == "read" and len(self.pending) >= _HELD:
            self._poller.unregister(0)
            self._input = "held"
        elif self._input == "held" and len(self.pending) < _HELD:
            self._poller.register(0, select.POLLIN)
            self._input = "read"

    def restore(self) -> None:
        if self._previous_winch is not None:
            signal.signal(signal.SIGWINCH, self._previous_winch)
        if self.saved is not None:
            try:
                termios.tcsetattr(0, termios.TCSANOW, self.saved)
            except termios.error:
                pass  # the terminal went away (SIGHUP): there is nothing to give back
