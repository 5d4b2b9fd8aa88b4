"""The container process's stdio: its output pipes copied live to the launcher's streams (and
to stdout_filename), and the launcher's stdin forwarded when there is input to forward."""

from __future__ import annotations

import os
import select
import sys
import threading

from nspawn.backends.hcs import console_size, documents
from nspawn.backends.hcs.native import kernel32, loader
from nspawn.backends.hcs.native.errors import HcsError, is_process_gone
from nspawn.output import to_launcher, write_all

_POLL_SECONDS = 0.05
STOP_SECONDS = 1.0  # how long the forwarder's stop waits for a write in progress


class Output:
    """Where the process's output goes: the session's streams or the launcher's own fds 1 and
    2, and both streams into one file when stdout_filename is set (hostcompute_nspawn's
    `>> file 2>&1`, and the Linux backend's)."""

    def __init__(self, session, file_path: str | None):
        self._streams = (session.stdout, session.stderr)
        self._file = os.open(file_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644) \
            if file_path else None
        self._file_lock = threading.Lock()

    def sink(self, n: int):
        stream = self._streams[n - 1]

        def write(data: bytes) -> None:
            to_launcher(stream, n, data)
            if self._file is not None:
                with self._file_lock:
                    write_all(self._file, data)
        return write

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _copy(handle: int, write) -> None:
    try:
        while data := kernel32.read(handle):
            write(data)
    except (HcsError, OSError):
        pass  # the pipe broke: there is nothing more to copy


class Pumps:
    """One thread per output pipe, reading until the writer is gone."""

    def __init__(self, process, output: Output):
        self._threads = [threading.Thread(target=_copy, args=(handle, output.sink(n)), daemon=True,
                                          name=f"hcs-output-{n}")
                         for n, handle in ((1, process.stdout), (2, process.stderr)) if handle is not None]
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> bool:
        """True once every pipe reached its end; HCS does not always close them (hcsshim
        internal/cmd/cmd.go, CopyAfterExitTimeout)."""
        for t in self._threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)


def stdin_has_input() -> bool:
    """Without an emulated console, the launcher's stdin is forwarded when it is a pipe or a
    file, given on purpose; not a console nor the null device, which is no input at all.
    Decided by the handle's type (GetFileType: both are FILE_TYPE_CHAR): CPython's os.fstat on
    Windows reports device and inode 0 for every handle that is not a disk file, so comparing
    it with os.devnull took a pipe for nul."""
    handle = loader.os_handle(0)
    if handle is None:
        return False
    try:
        kind = kernel32.file_type(handle)
    except HcsError:
        return False
    return kind in (kernel32.FILE_TYPE_DISK, kernel32.FILE_TYPE_PIPE)


class StdinForwarder:
    """Copies the launcher's stdin to the process, and closes the process's stdin at its end."""

    def __init__(self, process):
        self._process = process
        self._lock = threading.Lock()
        self._open = True
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hcs-stdin")
        self._thread.start()

    def _read(self) -> bytes | None:
        if sys.platform == "win32":
            return os.read(0, 65536)  # pipes cannot be polled there; stop() does not wait for this
        while not self._stopping.is_set():
            if select.select([0], [], [], _POLL_SECONDS)[0]:
                return os.read(0, 65536)
        return None

    def _run(self) -> None:
        while True:
            try:
                data = self._read()
            except OSError:
                data = b""
            with self._lock:
                if data is None or not self._open or self._stopping.is_set():
                    return
                try:
                    if not data:
                        self._open = False
                        self._process.close_stdin()
                        return
                    kernel32.write(self._process.stdin, data)
                except (BrokenPipeError, HcsError):
                    self._open = False
                    return

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Before the process handle closes: no write may reach a closed handle. A write the
        container never reads (a child of it holds its stdin open) can block for good, holding
        the lock: after `timeout` the stdin handle is left to the launcher's exit instead, never
        closed under the blocked writer, which ending the silo breaks off. False then."""
        self._stopping.set()
        if not self._lock.acquire(timeout=timeout):
            self._process.stdin = None
            return False
        try:
            self._open = False
        finally:
            self._lock.release()
        if sys.platform != "win32":
            self._thread.join()
        return True


class ConsoleSize:
    """Passes the launcher's console size on to the process's emulated console whenever it
    changes (HcsModifyProcess). Windows has no SIGWINCH: it is looked at every tick, as
    docker's Windows client does."""

    def __init__(self, process, size: tuple[int, int] | tuple[()]):
        self._process = process
        self._size = size

    def tick(self) -> None:
        size = console_size()
        if size is None or size == self._size:
            return
        self._size = size
        try:
            self._process.modify(documents.console_size(size))
        except HcsError as e:
            if not is_process_gone(e):
                raise
