"""The payload's pseudo-terminal (issue 12), driven as a user at a terminal drives the launcher
(tests/linux/terminals.py): a pts of the container's own, resized with the launcher's window,
Ctrl-C once, Ctrl-D, job control, a full-screen program, the host terminal given back as it was
however the run ends, the output file teed from it, and no way to type into the host's shell."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import skip_unless_ci
from tests.linux.conftest import ROOT, needs_root, sh
from tests.linux.conftest import run as run_captured
from tests.linux.terminals import PYTHON, SHOW_PYTHON, Launcher, run

pytestmark = needs_root

# Counts the signals it gets: any second copy of the first, or a SIGTERM after it, comes within
# the second it waits before saying what it got and ending with its own code.
COUNTS = """
import signal, sys, time
got = []
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, lambda n, f: got.append(signal.Signals(n).name))
print("ready", flush=True)
while not got:
    time.sleep(0.01)
time.sleep(1)
print("signals:", " ".join(got), flush=True)
sys.exit(3)
"""

# What the payload's terminal is, from inside; and a keystroke pushed into it (TIOCSTI), read back.
INSIDE = """
import fcntl, os, sys, termios
pts = os.fstat(0)
print("ttyname", os.ttyname(0), os.ttyname(1), os.ttyname(2))
os.close(os.open("/dev/tty", os.O_RDWR))  # ENXIO without a controlling terminal
print("same", all(os.fstat(fd).st_rdev == pts.st_rdev for fd in (1, 2)), os.stat("/dev/console").st_rdev == pts.st_rdev)
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
print("session", int(fields[3]) == os.getpid(), "controlling", int(fields[4]) == pts.st_rdev)
print("devpts", pts.st_dev, flush=True)
for c in b"pushed\\n":
    fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))
print("read back", sys.stdin.readline().strip(), flush=True)
"""

PUSH = """
import errno, fcntl, termios
try:
    for c in b"echo injected\\n":
        fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))
    print("TIOCSTI passed", flush=True)
except OSError as e:
    print("TIOCSTI refused", errno.errorcode[e.errno], flush=True)
"""


def test_the_payload_has_a_pts_of_the_containers_own_as_its_controlling_terminal(clean):
    with Launcher(run(PYTHON, "-c", INSIDE)) as t:
        t.expect(b"read back")
        assert t.wait() == 0, t.stderr()
        shown = t.shown.decode()
        assert "ttyname /dev/pts/0 /dev/pts/0 /dev/pts/0" in shown
        assert "same True True" in shown and "session True controlling True" in shown
        # The container's devpts is another instance than the one the launcher's terminal is on.
        inside = int(shown.split("devpts ")[1].split()[0])
        assert inside != os.fstat(t.slave).st_dev
        # The keystroke it pushed went to its own terminal, which it read back; the host's
        # terminal has nothing waiting.
        assert "read back pushed" in shown
        assert b"pushed" not in t.pending_input()


def test_without_a_terminal_the_payload_cannot_push_keystrokes_into_the_hosts(clean):
    """--no-tty on a terminal: the payload's stdin is the host's terminal itself, but not its
    controlling one (its session has none), so TIOCSTI is refused and nothing waits there."""
    with Launcher(run(PYTHON, "-c", PUSH, options=("--no-tty",))) as t:
        t.expect(b"TIOCSTI")
        assert t.wait() == 0, t.stderr()
        assert b"TIOCSTI refused" in t.shown, t.shown
        assert b"injected" not in t.pending_input()


def test_the_size_follows_the_launchers_window(clean):
    script = "stty size; trap 'stty size' WINCH; echo ready; while :; do sleep 0.1; done"
    with Launcher(run("/bin/sh", "-c", script), rows=30, columns=100) as t:
        t.expect(b"30 100")
        t.expect(b"ready")
        t.resize(40, 120)
        t.expect(b"40 120")
        t.type(b"\x03")
        assert t.wait() == 128 + signal.SIGINT


@pytest.mark.parametrize("options", [(), ("--no-tty",)], ids=["pty", "no-tty"])
def test_ctrl_c_reaches_the_payload_once(options, clean):
    """With a terminal, Ctrl-C is a byte the payload's terminal turns into one SIGINT; without,
    the host terminal signals the launcher, which passes it on once (the container is in a
    session of its own, so neither its init nor the payload gets the terminal's copy)."""
    with Launcher(run(PYTHON, "-c", COUNTS, options=options)) as t:
        t.expect(b"ready")
        t.type(b"\x03")
        t.expect(b"signals:")
        assert t.wait() == 3, t.stderr()
        assert b"signals: SIGINT\r\n" in t.shown


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_without_a_terminal_reaches_the_payload_once(signum, clean):
    launcher = subprocess.Popen([sys.executable, "-m", "nspawn", "run", *SHOW_PYTHON, "--", PYTHON, "-c", COUNTS], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert launcher.stdout.readline() == b"ready\n"
        launcher.send_signal(signum)
        out, err = launcher.communicate(timeout=30)
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode == 3, err
    assert out == f"signals: {signal.Signals(signum).name}\n".encode()


def test_a_timeout_stops_politely_once_then_kills(clean):
    """The polite stop comes once; a payload that ignores it is killed after the grace."""
    says = ("import signal, time\n"
            "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
            "    signal.signal(s, lambda n, f: print('got', signal.Signals(n).name, flush=True))\n"
            "print('ready', flush=True)\n"
            "while True: time.sleep(1)\n")
    ran = subprocess.run([sys.executable, "-m", "nspawn", "run", *SHOW_PYTHON, "--timeout", "2", "--grace", "1", "--", PYTHON, "-c", says],
                         cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 124, ran.stderr
    assert ran.stdout.splitlines() == ["ready", "got SIGTERM"]


def test_ctrl_d_ends_the_payloads_input(clean):
    with Launcher(run("/bin/cat")) as t:
        t.type(b"abc\r")
        t.expect(b"abc\r\nabc\r\n")  # the terminal's echo, then cat's copy
        t.type(b"\x04")
        assert t.wait() == 0, t.stderr()


@pytest.mark.parametrize("given", [b"one line\n", b"no newline"])
def test_a_terminal_asked_for_without_one_ends_its_input_with_the_file(given, tmp_path, clean):
    """-t with stdin from a file: its end is the terminal's end-of-file character, so cat ends."""
    (tmp_path / "input").write_bytes(given)
    with open(tmp_path / "input", "rb") as f:
        with Launcher(run("/bin/sh", "-c", "test -t 0 && cat && echo done", options=("-t",)), stdin=f.fileno()) as t:
            assert t.wait() == 0, (t.shown, t.stderr())
    assert given.rstrip(b"\n") in t.shown and b"done" in t.shown


def _foreground_job(argv: list[str]) -> bool:
    """A process running `argv` is its terminal's foreground process group (stat's tpgid)."""
    wanted = "\0".join(argv).encode() + b"\0"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() != wanted:
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "S" and fields[2] == fields[5]:  # sleeping, its group the foreground one
            return True
    return False


def test_a_terminal_takes_a_stdin_file_larger_than_it_holds(tmp_path, clean):
    """The relay holds input back while the payload does not read (it is not read into memory
    whole), and every line still arrives, then the end."""
    (tmp_path / "input").write_bytes(b"".join(b"%d\n" % n for n in range(300000)))  # 2 MB
    script = "stty -echo; sleep 1; echo counted $(wc -l)"  # what came before stty is echoed, as typed ahead
    with open(tmp_path / "input", "rb") as f:
        with Launcher(run("/bin/sh", "-c", script, options=("-t",)), stdin=f.fileno()) as t:
            assert t.wait(timeout=120) == 0, t.stderr()
    assert t.shown.rsplit(b"counted", 1)[1].split() == [b"300000"]


def test_job_control_works_in_an_interactive_shell(clean):
    bash = ["/bin/bash", "--norc", "--noprofile", "-i"]
    with Launcher(run(*bash, options=("-E", "PS1=prompt$ "))) as t:
        t.expect(b"prompt$ ")
        t.type(b"sleep 100 &\r")
        t.expect(b"prompt$ ")
        t.type(b"jobs\r")
        t.expect(b"Running")
        t.type(b"sleep 200\r")
        # Ctrl-Z once sleep is the terminal's foreground job: typed before, it goes to bash,
        # which ignores it (and the terminal discards what was typed with it).
        deadline = time.monotonic() + 30
        while not _foreground_job(["sleep", "200"]):
            assert time.monotonic() < deadline, t.shown
            time.sleep(0.05)
        t.type(b"\x1a")
        t.expect(b"Stopped")
        t.expect(b"prompt$ ")
        assert b"sleep 200" in t.shown
        t.type(b"jobs -l\r")
        t.expect(b"prompt$ ")
        t.type(b"kill -9 %1 %2; wait\r")
        t.expect(b"prompt$ ")
        t.type(b"exit 7\r")
        assert t.wait() == 7, (t.shown, t.stderr())
    assert b"no job control" not in t.shown


def test_less_is_usable(clean):
    if shutil.which("less") is None:
        skip_unless_ci("less is not installed")
    with Launcher(run("/bin/sh", "-c", "seq 1 1000 | less"), env={"TERM": "xterm"}) as t:
        t.expect(b"23")
        t.type(b"G")
        t.expect(b"1000")
        t.type(b"q")
        assert t.wait() == 0, t.stderr()


@pytest.mark.parametrize("ending", ["exit", "error", "setup-error", "SIGTERM", "SIGHUP"])
def test_the_host_terminal_is_given_back_as_it_was(ending, clean):
    """error: an exception while the terminal is relayed; setup-error: init fails making it."""
    env = {"NSPAWN_FAIL_AT": {"error": "relay", "setup-error": "terminal"}[ending]} if "error" in ending else {}
    with Launcher(run(PYTHON, "-c", "import time; print('ready', flush=True); time.sleep(100)"), env=env) as t:
        before = t.settings()
        if "error" not in ending:
            t.expect(b"ready")
            during = t.settings()
            assert during != before and "-icanon" in during and "-echo " in during  # raw while it runs
            if ending == "exit":
                t.type(b"\x03")
            else:
                os.kill(t.pid, getattr(signal, ending))
        code = t.wait()
        assert t.settings() == before
        stderr = t.stderr()
    assert code == {"exit": 130, "error": 125, "setup-error": 125, "SIGTERM": 143, "SIGHUP": 129}[ending], stderr
    if "error" in ending:
        assert f"failure injected at {env['NSPAWN_FAIL_AT']}" in stderr, stderr


def test_the_output_file_is_teed_from_the_terminal(tmp_path, clean):
    script = "test -t 1 && echo stdout is a terminal; echo to stderr >&2"
    with Launcher(["run", "-D", str(tmp_path), "--stdout-file", "log.txt", "--", "/bin/sh", "-c", script]) as t:
        assert t.wait() == 0, t.stderr()
    assert b"stdout is a terminal\r\nto stderr\r\n" in t.shown
    assert (tmp_path / "log.txt").read_bytes() == b"stdout is a terminal\r\nto stderr\r\n"


def test_a_caller_that_captures_the_output_gives_no_terminal(clean):
    """As a batch job's run does: its output goes to the caller's streams, which a terminal
    would merge; tty always is said to be ignored."""
    r = run_captured(sh("test -t 1 || echo not a terminal; echo err >&2", tty="always"))
    assert (r.code, r.out, r.err) == (0, "not a terminal\n", "err\n")
    assert any("tty always is ignored" in w for w in r.warnings())


def test_json_starts_a_line_of_its_own_after_the_terminals_output(clean):
    with Launcher(["run", "--json", "--", "printf", "abc"]) as t:
        assert t.wait() == 0, t.stderr()
    output, line = t.shown.split(b"\r\n", 1)
    assert output == b"abc" and json.loads(line)["exit_code"] == 0


@pytest.mark.parametrize("own", [True, False], ids=["the payload's terminal relayed", "stdin not a terminal"])
def test_a_terminal_that_shows_nothing_more_does_not_hold_up_the_timeout(own, tmp_path, clean):
    """The launcher's terminal takes no more output (a terminal emulator that stopped reading,
    a stalled ssh session): the test never reads its master. The payload stalls writing, not
    the launcher, whose timeout still ends the run and says so on stderr; the output file
    has what the payload wrote. Without a terminal of the payload's own (stdin not one) its
    output is copied to the launcher's terminal, which refuses a splice."""
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with Launcher(["run", "-D", str(tmp_path), "--stdout-file", "log.txt", "--timeout", "2", "--", "/usr/bin/yes"],
                      stdin=None if own else null) as t:
            err, deadline = "", time.monotonic() + 60
            while "the timeout expired" not in err:
                assert time.monotonic() < deadline, f"the launcher did not end the run in 60 s; it said {err!r}"
                time.sleep(0.05)
                err += t.stderr()
            assert t.wait() == 124, err
    finally:
        os.close(null)
    lines = lambda shown: shown.replace(b"\r\n", b"\n")  # noqa: E731 (a terminal of the host's own ends lines so)
    assert len(t.shown) > 1 << 11 and lines((tmp_path / "log.txt").read_bytes()).startswith(lines(t.shown)[:1 << 11])
