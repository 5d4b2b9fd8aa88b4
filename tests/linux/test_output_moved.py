"""The container's output moved by the kernel (outputcopy: tee and splice) when the launcher's
own stdout and stderr take it: every byte reaches both the launcher's descriptor and
stdout_filename's file, whatever that descriptor is (a pipe, a file, one opened for appending,
/dev/null, a reader that leaves), and a run still stops on time while output flows. Outputs
are larger than every pipe on the way, so no test passes on one buffer's worth."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty

import pytest

from nspawn import exitcodes
from nspawn.backends.linux import outputcopy
from nspawn.output import write_all
from tests.linux.conftest import ROOT, needs_root

pytestmark = needs_root

PIPE_BYTES = 1 << 20
PAYLOAD = os.urandom(3 * PIPE_BYTES) + b"the end\n"


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return r, w


class _Reader(threading.Thread):
    """Reads a pipe to its end, or closes it after `keep` bytes (as `| head -c` does)."""

    def __init__(self, fd: int, keep: int | None = None):
        super().__init__()
        self.fd, self.keep, self.got = fd, keep, bytearray()

    def run(self) -> None:
        while self.keep is None or len(self.got) < self.keep:
            try:
                data = os.read(self.fd, 65536)
            except OSError as e:  # a terminal's master once its slave is closed
                assert e.errno == errno.EIO
                break
            if not data:
                break
            self.got += data
        os.close(self.fd)


def _launchers_stdout(kind: str) -> tuple[int, int]:
    """(the end a reader reads, the end the launcher writes) of a pipe (the default 64 KiB, as
    a shell's pipe is: it takes less at a time than the source holds), a terminal (raw: as
    written) or a socket."""
    if kind == "pipe":
        return os.pipe()
    if kind == "terminal":
        master, slave = os.openpty()
        tty.setraw(slave)
        return master, slave
    return tuple(s.detach() for s in socket.socketpair())


def _move(out: int, file: int | None) -> None:
    """PAYLOAD written into a pipe by a thread, moved out of it by a Mover as the launcher's
    wait does: poll, then the Mover until it says the pipe ended, and when it waits for room
    in `out`, poll that and resume."""
    source, sink = _pipe()
    made = []

    def make_pipe() -> tuple[int, int]:
        made.extend(_pipe())
        return made[-2], made[-1]

    def keep(fd: int) -> int:
        made.append(fd)
        return fd

    mover = outputcopy.Mover(source, out, file, make_pipe, keep, PIPE_BYTES)
    writer = threading.Thread(target=lambda: (write_all(sink, PAYLOAD), os.close(sink)))
    writer.start()
    poller = select.poll()
    poller.register(source, select.POLLIN)
    try:
        while not mover.ended:
            if mover.waiting:  # `out` had no room: the launcher waits for it, then resumes
                room = select.poll()
                room.register(mover.room, select.POLLOUT)
                room.poll()
                mover.resume()
                continue
            poller.poll()
            mover()
    finally:
        writer.join()
        for fd in (source, *made):
            os.close(fd)


@pytest.fixture
def output_file(tmp_path):
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    yield fd, tmp_path / "out.bin"
    os.close(fd)


@pytest.mark.parametrize("kind", ["pipe", "terminal", "socket"])
def test_the_launchers_stdout_and_the_file_each_get_every_byte(output_file, kind):
    r, w = _launchers_stdout(kind)
    reader = _Reader(r)
    reader.start()
    _move(w, output_file[0])
    os.close(w)
    reader.join()
    assert bytes(reader.got) == PAYLOAD
    assert output_file[1].read_bytes() == PAYLOAD


@pytest.mark.parametrize("append", [False, True], ids=["file", "file opened for appending"])
def test_a_file_as_the_launchers_stdout_gets_every_byte(output_file, tmp_path, append):
    """A file opened for appending refuses splice: the output is copied instead, from the
    chunk that was refused on."""
    launcher_out = tmp_path / "launcher.out"
    launcher_out.write_bytes(b"before\n")
    out = os.open(launcher_out, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
    try:
        _move(out, output_file[0])
    finally:
        os.close(out)
    assert launcher_out.read_bytes() == (b"before\n" if append else b"") + PAYLOAD
    assert output_file[1].read_bytes() == PAYLOAD


def test_a_file_that_refuses_splice_gets_every_byte(tmp_path):
    """The output file opened for appending stands for a file system that cannot splice: the
    output is read and written to it instead, from the chunk that was refused on."""
    (tmp_path / "out.bin").write_bytes(b"before\n")
    file = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_APPEND)
    r, w = os.pipe()
    reader = _Reader(r)
    reader.start()
    try:
        _move(w, file)
    finally:
        os.close(file)
        os.close(w)
        reader.join()
    assert bytes(reader.got) == PAYLOAD
    assert (tmp_path / "out.bin").read_bytes() == b"before\n" + PAYLOAD


def test_dev_null_or_a_closed_stdout_leaves_the_file_every_byte(output_file):
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        _move(null, output_file[0])
    finally:
        os.close(null)
    assert output_file[1].read_bytes() == PAYLOAD
    os.ftruncate(output_file[0], 0)
    os.lseek(output_file[0], 0, os.SEEK_SET)
    closed = os.open(os.devnull, os.O_WRONLY)
    os.close(closed)  # a launcher started with its stdout closed
    _move(closed, output_file[0])
    assert output_file[1].read_bytes() == PAYLOAD


@pytest.mark.parametrize("keep", [0, 100_000], ids=["gone before", "gone half-way"])
def test_a_reader_that_leaves_leaves_the_file_every_byte(output_file, keep):
    r, w = os.pipe()
    reader = _Reader(r, keep)
    reader.start()
    if not keep:
        reader.join()
    _move(w, output_file[0])
    os.close(w)
    reader.join()
    assert bytes(reader.got) == PAYLOAD[:len(reader.got)] and len(reader.got) >= keep
    assert output_file[1].read_bytes() == PAYLOAD


@pytest.mark.parametrize("kind", ["pipe", "terminal", "socket"])
def test_without_a_file_the_launchers_stdout_gets_every_byte(kind):
    r, w = _launchers_stdout(kind)
    reader = _Reader(r)
    reader.start()
    _move(w, None)
    os.close(w)
    reader.join()
    assert bytes(reader.got) == PAYLOAD


@pytest.mark.parametrize("kind", ["pipe", "terminal", "socket"])
def test_an_outlet_never_blocks_and_leaves_the_descriptor_as_it_was(kind):
    """Nobody reads the launcher's stdout for a while: a write there returns at once, with what
    did not fit waiting, and the descriptor (whose open file description the shell shares)
    is still blocking; once read, every byte arrives, in order."""
    r, w = _launchers_stdout(kind)
    flags, made = fcntl.fcntl(w, fcntl.F_GETFL), []
    try:
        outlet = outputcopy.Outlet(w, lambda fd: made.append(fd) or fd)

        def blocked(signum, frame):
            raise AssertionError("the write blocked")

        previous = signal.signal(signal.SIGALRM, blocked)
        signal.setitimer(signal.ITIMER_REAL, 10)
        try:
            assert not outlet.write(PAYLOAD)  # more than any of them holds
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert fcntl.fcntl(w, fcntl.F_GETFL) == flags and not flags & os.O_NONBLOCK
        got, deadline = bytearray(), time.monotonic() + 60
        while len(got) < len(PAYLOAD):
            assert time.monotonic() < deadline, f"{len(got)} of {len(PAYLOAD)} bytes came in 60 s"
            if select.select([r], [], [], 0.1)[0]:
                got += os.read(r, 1 << 16)
            outlet.flush()
        assert got == PAYLOAD and outlet.flush()
    finally:
        for fd in (r, w, *made):
            os.close(fd)


# The whole launcher, as a user runs it: its stdout and stderr are the test's.

DATA_SCRIPT = "head -c 3000000 /dev/urandom > data; "


class _launcher(subprocess.Popen):
    """`nspawn run` with stdout_filename log.bin in `tmp_path`. Killed at the end of its block
    if it still runs: a test that failed while `cat /dev/zero` streams into the file would
    otherwise wait for it, as Popen's own exit does, until the disk is full."""

    def __init__(self, tmp_path, *args, script: str, **popen):
        super().__init__([sys.executable, "-m", "nspawn", "run", "-D", str(tmp_path), "--stdout-file", "log.bin", *args,
                          "--", "/bin/sh", "-c", script], cwd=ROOT, **popen)

    def __exit__(self, *exc):
        if self.poll() is None:
            self.kill()
        return super().__exit__(*exc)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("as_file", [False, True], ids=["launcher's own a pipe", "a file"])
def test_a_run_gives_the_launcher_and_the_file_every_byte(tmp_path, stream, as_file):
    other = "stderr" if stream == "stdout" else "stdout"
    target = open(tmp_path / "launcher.out", "wb") if as_file else subprocess.PIPE
    with _launcher(tmp_path, script=DATA_SCRIPT + "cat data" + ("" if stream == "stdout" else " >&2"),
                   **{stream: target, other: subprocess.PIPE}) as launcher:
        said = dict(zip(("stdout", "stderr"), launcher.communicate(timeout=60)))
    if as_file:
        target.close()
        said[stream] = (tmp_path / "launcher.out").read_bytes()
    assert launcher.returncode == 0, said["stderr"]
    data = (tmp_path / "data").read_bytes()
    assert len(data) == 3000000 and said[stream] == data and (tmp_path / "log.bin").read_bytes() == data
    assert said[other] == b""


def test_json_takes_stdout_and_stderr_is_moved_with_no_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nspawn", "run", "--json", "-D", str(tmp_path), "--",
                        "/bin/sh", "-c", DATA_SCRIPT + "cat data >&2; echo out"], cwd=ROOT, capture_output=True, timeout=60)
    out, result = r.stdout.decode().splitlines()
    assert r.returncode == 0 and out == "out" and json.loads(result)["exit_code"] == 0
    assert r.stderr == (tmp_path / "data").read_bytes()


def test_a_reader_gone_early_leaves_the_file_every_byte(tmp_path):
    with _launcher(tmp_path, script=DATA_SCRIPT + "cat data", stdout=subprocess.PIPE, stderr=subprocess.PIPE) as launcher:
        assert len(launcher.stdout.read(1000)) == 1000
        launcher.stdout.close()  # as `| head -c 1000` does
        assert launcher.wait(timeout=60) == 0, launcher.stderr.read()
    assert (tmp_path / "log.bin").read_bytes() == (tmp_path / "data").read_bytes()


def _drain_slowly(launcher: subprocess.Popen, after=None) -> int:
    """Reads the launcher's stdout to its end 64 KiB at a time with a pause between (a heavy
    payload stays bounded on disk); calls `after` once 1 MiB is read. Returns the bytes read."""
    fd, total = launcher.stdout.fileno(), 0
    while data := os.read(fd, 65536):
        total += len(data)
        if after is not None and total >= PIPE_BYTES:
            after()
            after = None
        time.sleep(0.002)
    return total


def test_the_timeout_ends_a_run_whose_output_flows(tmp_path):
    """What the slow reader has not taken when the run times out is dropped; the file has it."""
    with _launcher(tmp_path, "--timeout", "1", script="cat /dev/zero", stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE) as launcher:
        total = _drain_slowly(launcher)
        assert launcher.wait(timeout=60) == exitcodes.TIMEOUT, launcher.stderr.read()
    assert total > PIPE_BYTES and os.path.getsize(tmp_path / "log.bin") >= total


def _stalled(launcher: subprocess.Popen, log) -> None:
    """Waits until the payload's output fills the launcher's stdout (a 64 KiB pipe nobody
    reads): the file has at least that then (it takes each chunk before the stdout does), and
    how much more depends on how much the first splice found waiting."""
    deadline = time.monotonic() + 60
    while not (os.path.exists(log) and os.path.getsize(log) >= 1 << 16):
        assert launcher.poll() is None, launcher.stderr.read()
        assert time.monotonic() < deadline, "the output file did not reach 64 KiB in 60 s"
        time.sleep(0.05)


@pytest.mark.parametrize("ending", ["timeout", "SIGTERM"])
def test_a_reader_that_takes_nothing_does_not_hold_up_the_end_of_a_run(tmp_path, ending):
    """The launcher's stdout is a pipe nobody reads (a consumer that stopped): the payload
    waits for room, as it would writing there itself, and the timeout and a stop still end
    the run; the file has what the payload wrote. A launcher blocked writing to its stdout
    would never end (communicate's timeout would fail the test)."""
    args = ("--timeout", "2") if ending == "timeout" else ()
    with _launcher(tmp_path, *args, script="cat /dev/zero", stdout=subprocess.PIPE, stderr=subprocess.PIPE) as launcher:
        if ending == "SIGTERM":
            _stalled(launcher, tmp_path / "log.bin")
            launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == (exitcodes.TIMEOUT if ending == "timeout" else 128 + signal.SIGTERM), \
            launcher.stderr.read()
        taken = len(launcher.stdout.read())
    assert os.path.getsize(tmp_path / "log.bin") >= max(taken, PIPE_BYTES)


@pytest.mark.parametrize("ending", ["timeout", "SIGTERM"])
def test_json_with_a_reader_that_takes_nothing_still_ends_the_run(tmp_path, ending):
    """--json watches the payload's stdout on its way to the launcher's (its result line must
    start a line of its own). A reader that takes nothing stalls the payload, not the launcher:
    the timeout and a stop end the run while the test reads none of the stdout, and the
    launcher says so on stderr; the result line comes once the reader reads again, with the
    run's own code."""
    args = ("--json",) + (("--timeout", "2") if ending == "timeout" else ())
    said = b"the timeout expired" if ending == "timeout" else b"stopped by signal %d" % signal.SIGTERM
    code = exitcodes.TIMEOUT if ending == "timeout" else 128 + signal.SIGTERM
    with _launcher(tmp_path, *args, script="cat /dev/zero", stdout=subprocess.PIPE, stderr=subprocess.PIPE) as launcher:
        if ending == "SIGTERM":
            _stalled(launcher, tmp_path / "log.bin")
            launcher.send_signal(signal.SIGTERM)
        err, deadline = b"", time.monotonic() + 60
        while said not in err:
            assert select.select([launcher.stderr], [], [], max(0.0, deadline - time.monotonic()))[0], \
                f"the launcher did not end the run in 60 s; it said {err!r}"
            chunk = os.read(launcher.stderr.fileno(), 65536)
            assert chunk, f"the launcher closed its stderr; it said {err!r}"
            err += chunk
        out = launcher.stdout.read()
        assert launcher.wait(timeout=60) == code, err
    output, line = out.rstrip(b"\n").rsplit(b"\n", 1)  # the payload's zeros end no line: the result's starts one
    assert json.loads(line)["exit_code"] == code
    assert len(output) >= 1 << 16 and output == bytes(len(output)) and os.path.getsize(tmp_path / "log.bin") >= len(output)


def test_json_with_a_reader_gone_keeps_the_runs_code(tmp_path):
    """The result line cannot reach a reader that went away (`| head`): the launcher still
    ends with the run's own code (click would end it with 1 on the broken pipe)."""
    with _launcher(tmp_path, "--json", script="head -c 1000000 /dev/zero; sleep 0.5; exit 3", stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE) as launcher:
        assert len(launcher.stdout.read(1000)) == 1000
        launcher.stdout.close()
        assert launcher.wait(timeout=60) == 3, launcher.stderr.read()
    assert os.path.getsize(tmp_path / "log.bin") == 1000000


def test_a_sigterm_stops_a_run_whose_output_flows(tmp_path):
    """The launcher is often blocked in tee for room in its stdout then: the signal must still
    reach the stop."""
    with _launcher(tmp_path, script="cat /dev/zero", stdout=subprocess.PIPE, stderr=subprocess.PIPE) as launcher:
        total = _drain_slowly(launcher, lambda: launcher.send_signal(signal.SIGTERM))
        assert launcher.wait(timeout=60) == 128 + signal.SIGTERM, launcher.stderr.read()
    assert total > PIPE_BYTES and os.path.getsize(tmp_path / "log.bin") >= total

