"""`nspawn run` and `nspawn doctor` on a real Windows Server 2022 host (the windows workflow)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.windows.hcs_host import CMD, PARENT, PYTHON, launcher, nspawn_run, with_python

pytestmark = pytest.mark.windows


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_output_and_exit_code_of_cmd(api):
    result = nspawn_run("--hcs-api", api, "--", CMD, "/c", "echo hello from nanoserver")
    assert result.returncode == 0, result.stderr
    assert "hello from nanoserver" in result.stdout

    result = nspawn_run("--hcs-api", api, "--", CMD, "/c", "exit 3")
    assert result.returncode == 3, result.stderr


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_stdin_from_a_pipe_reaches_the_container(api):
    """CPython's os.fstat cannot tell a pipe from nul on Windows (device and inode 0): the
    launcher decides by GetFileType, and the piped line must arrive."""
    result = subprocess.run(launcher("--hcs-api", api, "--", CMD, "/v:on", "/c", "set /p LINE=& echo got !LINE!"),
                            input="piped line\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "got piped line" in result.stdout


def test_stdin_from_nul_is_no_input():
    result = subprocess.run(launcher("--", CMD, "/c", "set /p LINE= & echo done"), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300)
    assert "done" in result.stdout, result.stderr


def test_the_mapped_directory_is_read_and_written(tmp_path):
    (tmp_path / "in.txt").write_text("from the host\n")
    result = nspawn_run("-D", str(tmp_path), "--mapped-directory", "C:\\work", "--",
                        CMD, "/c", "type C:\\work\\in.txt & echo from the container> C:\\work\\out.txt")
    assert result.returncode == 0, result.stderr
    assert "from the host" in result.stdout
    assert (tmp_path / "out.txt").read_text().strip() == "from the container"


def test_a_read_only_mapping_refuses_writes(tmp_path):
    (tmp_path / "in.txt").write_text("kept\n")
    result = nspawn_run("-D", str(tmp_path), "--mapped-directory", "C:\\work", "--read-only", "--",
                        CMD, "/c", "type C:\\work\\in.txt & echo x> C:\\work\\new.txt")
    assert result.returncode != 0
    assert "kept" in result.stdout
    assert not (tmp_path / "new.txt").exists()


def test_stdout_filename_receives_the_output_too(tmp_path):
    result = nspawn_run("-D", str(tmp_path), "--mapped-directory", "C:\\work", "--stdout-file", "out.log", "--",
                        CMD, "/c", "echo logged")
    assert result.returncode == 0, result.stderr
    assert "logged" in result.stdout
    assert "logged" in (tmp_path / "out.log").read_text()


def test_the_memory_limit_holds():
    allocate = "bytearray(512 * 2**20); print('allocated')"
    limited = nspawn_run(*with_python("--memory", "128M", "--json", "--", PYTHON, "-I", "-c", allocate))
    assert limited.returncode == 1 and "MemoryError" in limited.stderr, limited.stderr
    assert "max_ram_mb" in json.loads(limited.stdout.splitlines()[-1])["limits_applied"]

    free = nspawn_run(*with_python("--", PYTHON, "-I", "-c", allocate))
    assert free.returncode == 0 and "allocated" in free.stdout, free.stderr


def test_the_timeout_stops_the_container_with_124():
    result = nspawn_run(*with_python("--timeout", "5s", "--grace", "2s", "--", PYTHON, "-I", "-c",
                                     "import time; time.sleep(600)"), timeout=120)
    assert result.returncode == 124, result.stderr


def test_ctrl_break_reaches_the_payload_which_ends_the_run_with_its_own_code():
    """Ctrl-C cannot be sent to another process group on Windows; Ctrl-Break is its
    equivalent there and reaches the launcher as SIGBREAK, the container as CtrlBreak. A
    payload that handles it and exits gives the run its own code, as on Linux."""
    payload = ("import signal, sys, time; signal.signal(signal.SIGBREAK, lambda *a: sys.exit(9)); "
               "print('ready', flush=True); time.sleep(600)")
    process = subprocess.Popen(
        launcher(*with_python("--", PYTHON, "-I", "-u", "-c", payload)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.CTRL_BREAK_EVENT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 9, stderr


def test_the_timeout_sends_ctrl_shutdown(tmp_path):
    """The polite stop of a timeout is CtrlShutdown (hcsshim's SIGTERM), which a console
    control handler sees as CTRL_SHUTDOWN_EVENT (6)."""
    payload = ("import ctypes, time\n"
               "def on(event):\n"
               "    open(r'C:\\work\\event.txt', 'w').write(str(event))\n"
               "    return 0\n"
               "handler = ctypes.WINFUNCTYPE(ctypes.c_int, ctypes.c_uint)(on)\n"
               "ctypes.windll.kernel32.SetConsoleCtrlHandler(handler, 1)\n"
               "time.sleep(600)\n")
    result = nspawn_run(*with_python("-D", str(tmp_path), "--mapped-directory", "C:\\work", "--timeout", "5s",
                                     "--grace", "30s", "--", PYTHON, "-I", "-c", payload), timeout=180)
    assert result.returncode == 124, result.stderr
    assert (tmp_path / "event.txt").read_text() == "6"


def test_the_processor_groups_hold_every_cpu_of_the_host():
    from nspawn.backends.hcs.native import kernel32

    groups = kernel32.processor_groups()
    assert groups and all(0 < size <= 64 for size in groups)
    assert sum(groups) == os.cpu_count()


def test_the_win32_layer_cwinsdk_gives_has_windows_layouts_and_calls():
    """The structures and prototypes taken from ctypes-windows-sdk (through loader.sdk, whose
    DLLs resolve through nspawn's loader) as Windows x64 lays them out and answers them."""
    import ctypes
    import msvcrt

    from nspawn.backends.hcs.native import kernel32
    from nspawn.backends.hcs.native import vmcompute as vm

    sizes = {kernel32.OVERLAPPED: 32, kernel32.GROUP_AFFINITY: 16, kernel32.UNICODE_STRING: 16,
             kernel32.OBJECT_ATTRIBUTES: 48, kernel32.OSVERSIONINFOW: 276, vm.GUID: 16}
    assert {t: ctypes.sizeof(t) for t in sizes} == sizes
    assert kernel32.windows_build() == sys.getwindowsversion().build
    r, w = os.pipe()
    try:
        assert kernel32.file_type(msvcrt.get_osfhandle(r)) == kernel32.FILE_TYPE_PIPE
    finally:
        os.close(r)
        os.close(w)


def test_a_cpu_of_group_1_pins_the_container_there():
    """Windows sizes processor groups by NUMA node (two groups of 36 on a 72-CPU host): the
    first CPU of group 1 is CPU groups[0], which the container must run on, in group 1."""
    from nspawn.backends.hcs.native import kernel32

    groups = kernel32.processor_groups()
    if len(groups) < 2:
        pytest.skip(f"this host has one processor group of {groups[0]} CPUs; the mapping needs two or more")
    if kernel32.windows_build() < 20348:
        pytest.skip("a container outside processor group 0 needs Windows Server 2022")
    payload = ("import ctypes\n"
               "class P(ctypes.Structure):\n"
               "    _fields_ = [('Group', ctypes.c_uint16), ('Number', ctypes.c_uint8), ('Reserved', ctypes.c_uint8)]\n"
               "p = P()\n"
               "ctypes.windll.kernel32.GetCurrentProcessorNumberEx(ctypes.byref(p))\n"
               "print('group', p.Group, 'number', p.Number)\n")
    result = nspawn_run(*with_python("--affinity", str(groups[0]), "--json", "--", PYTHON, "-I", "-c", payload))
    assert result.returncode == 0, result.stderr
    assert "group 1 number 0" in result.stdout, result.stdout


@pytest.mark.parametrize("network,reaches", [("none", False), ("nat", True)])
def test_network_none_has_no_route_and_nat_has_one(network, reaches):
    connect = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=10); print('connected')"
    result = nspawn_run(*with_python("--network", network, "--", PYTHON, "-I", "-c", connect))
    assert (result.returncode == 0 and "connected" in result.stdout) is reaches, result.stderr


def test_doctor_judges_the_parent_layer_against_the_host(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"parent_layer_directory": PARENT, "process_executable": CMD}))
    result = subprocess.run([sys.executable, "-m", "nspawn", "doctor", "--backend", "hcs", "-c", str(config)],
                            capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    for check in ("windows", "v2 API (computecore.dll)", "v1 API (vmcompute.dll)", "HCS service", "parent layer",
                  "image vs host (process isolation)"):
        assert any(line.startswith(f"ok  {check}: ") for line in lines), result.stdout
    assert result.returncode == 0, result.stdout


def test_dry_run_of_the_original_config():
    result = subprocess.run([sys.executable, "-m", "nspawn", "run", "--dry-run", "-c",
                             os.path.join(ROOT, "configs", "hostcompute_nspawn.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["backend"] == "hcs" and plan["v1"]["compute_system"]["MemoryMaximumInMB"] == 512


# Run in a console of its own (CREATE_NEW_CONSOLE): it reads that console's size as the launcher
# will (from stderr, which stays the console: stdout is a pipe, so that the payload's output can
# be read), then runs the launcher in it and says what both saw.
IN_A_CONSOLE = """
import json, os, subprocess, sys
size = os.get_terminal_size(2)
ran = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE)
with open(sys.argv[1], "w") as f:
    json.dump({"lines": size.lines, "columns": size.columns, "code": ran.returncode,
               "out": ran.stdout.decode(errors="replace")}, f)
"""


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_an_emulated_console_has_the_launchers_console_size(api, tmp_path):
    """-t: EmulateConsole with ConsoleSize [height, width] of the launcher's console; inside,
    Python's stdout is that console and reports the same size."""
    report = tmp_path / "report.json"
    inside = "import os, sys; size = os.get_terminal_size(1); print('console', size.lines, size.columns, sys.stdout.isatty())"
    argv = launcher("--hcs-api", api, "-t", *with_python("--", PYTHON, "-I", "-c", inside))
    subprocess.run([sys.executable, "-c", IN_A_CONSOLE, str(report), *argv], cwd=ROOT, timeout=300,
                   creationflags=subprocess.CREATE_NEW_CONSOLE, check=True)
    seen = json.loads(report.read_text())
    assert seen["code"] == 0, seen
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", seen["out"])  # the pseudo console's VT
    assert f"console {seen['lines']} {seen['columns']} True" in shown, seen
