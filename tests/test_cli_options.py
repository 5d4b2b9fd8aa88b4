"""The command line's own promises (issue 18): no option value that silently means "no limit",
--json's line for every ending, -q/-v after the command, docker's and systemd-nspawn's
spellings of binds and environment, PowerShell completion."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT, nspawn
from nspawn import entry, runcmd
from nspawn.cli import cli
from nspawn.config.model import Mount
from nspawn.config.resolve import load_config
from tests.linux.conftest import needs_root


def _needs_root(test):
    for mark in needs_root:
        test = mark(test)
    return test


def _overrides(monkeypatch, *argv):
    """What `nspawn run ARGV` hands the run body (exit code, overrides, how)."""
    given = []

    def run_and_report(path, overrides, **how):
        given.append((overrides, how))
        return 0, None

    monkeypatch.setattr(runcmd, "run_and_report", run_and_report)
    ran = CliRunner().invoke(cli, ["run", *argv])
    return ran, (given[0] if given else (None, None))


# --- item 1: sizes and CPU lists that would silently mean "no limit"

@pytest.mark.parametrize("argv, said", [
    (["--memory", "100K"], "less than 1 MiB"),
    (["--memory", "0.5"], "less than 1 MiB"),
    (["--io-bandwidth", "0.4"], "less than 1 byte"),
    (["--affinity", "5-3"], "the range 5-3 is empty"),
    (["--affinity", "0,7-2"], "the range 7-2 is empty"),
    (["--cpu-percent", "nan"], "not a finite number"),  # found by tests/test_cli_properties.py: a crash in the plan
    (["--affinity", "0-100000"], "CPU 100000 is beyond 4095"),  # issue 11: a mask too wide to print
    (["--affinity", "0x" + "f" * 1025], "1025 hex digits; expected at most 1024"),
])
def test_a_value_that_would_mean_no_limit_is_refused(monkeypatch, argv, said):
    ran, (overrides, _) = _overrides(monkeypatch, *argv, "--", "/bin/true")
    assert ran.exit_code == 2 and overrides is None
    assert said in ran.output and "Traceback" not in ran.output


def test_zero_still_means_no_limit_and_small_sizes_convert(monkeypatch):
    ran, (overrides, _) = _overrides(monkeypatch, "--memory", "0", "--io-bandwidth", "1K", "--affinity", "3-5",
                                     "--", "/bin/true")
    assert ran.exit_code == 0, ran.output
    assert (overrides["max_ram_mb"], overrides["max_storage_bandwidth_bytes_per_sec"]) == (0, 1024)
    assert overrides["cpu_affinity_hex"] == 0b111000


# --- item 2: --json prints a result line for every ending

def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_json_line_for_a_config_error_and_a_missing_executable(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"process_executable": "/bin/true",\n "max_ram_mb": "lots"}')
    for argv, code in ((["-c", str(bad)], 2), (["-p", "8080:80", "--", "/bin/true"], 2),
                       (["--memory", "lots", "--", "/bin/true"], 2),  # refused by click itself
                       (["--", "/definitely/missing"], 127)):
        ran = nspawn("run", "--json", *argv)
        assert ran.returncode == code, ran.stderr
        [line] = _json_lines(ran.stdout)
        assert ran.stdout.endswith("\n") and ran.stdout.count("\n") == 1
        assert line["exit_code"] == code and line["problems"] and line["error"], line
        assert line["problems"][0]["text"] in line["error"]


def test_json_line_for_a_file_that_cannot_execute(tmp_path):
    tool = tmp_path / "tool"
    tool.write_text("not a program")
    tool.chmod(0o644)
    ran = nspawn("run", "--json", "-D", str(tmp_path), "--", "tool")
    assert ran.returncode == 126, ran.stderr
    [line] = _json_lines(ran.stdout)
    assert line["exit_code"] == 126 and line["problems"]


def _with_json_fd(*argv: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`nspawn run --json-fd N ARGV`, N a pipe's write end; (the launcher, the lines on the pipe)."""
    r, w = os.pipe()
    try:
        ran = subprocess.run([sys.executable, "-m", "nspawn", "run", "--json-fd", str(w), *argv], pass_fds=(w,),
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        os.close(w)
        w = None
        with os.fdopen(r, "rb") as f:
            r = None
            lines = [json.loads(line) for line in f.read().splitlines()]
    finally:
        for fd in (r, w):
            if fd is not None:
                os.close(fd)
    return ran, lines


def test_json_fd_gets_the_line_of_a_refused_run_and_stdout_none():
    ran, lines = _with_json_fd("--", "/nonexistent/tool")
    assert ran.returncode == 127 and ran.stdout == ""
    [line] = lines
    assert line["exit_code"] == 127 and line["container_id"] is None and line["problems"]


@pytest.mark.parametrize("spelling", [["--json-fd", "{fd}"], ["--json-fd={fd}"]])
def test_json_fd_gets_the_line_of_a_command_line_click_refuses(spelling):
    r, w = os.pipe()
    try:
        ran = subprocess.run([sys.executable, "-m", "nspawn", "run", *(a.format(fd=w) for a in spelling),
                              "--memory", "lots", "--", "/bin/true"], pass_fds=(w,), capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        os.close(w)
        w = None
        [line] = os.read(r, 65536).decode().splitlines()
    finally:
        for fd in (r, w):
            if fd is not None:
                os.close(fd)
    assert ran.returncode == 2 and ran.stdout == ""
    assert json.loads(line)["exit_code"] == 2 and "--memory" in json.loads(line)["error"]


def test_json_fd_must_be_open():
    ran = nspawn("run", "--json-fd", "97", "--", "/bin/true")
    assert ran.returncode == 2 and "97 is not an open descriptor" in ran.stderr


@_needs_root
def test_json_fd_gets_the_result_and_the_container_never_sees_it():
    ran, lines = _with_json_fd("--", "/bin/sh", "-c", "printf abc; ls /proc/self/fd | tr '\\n' ' ' >&2")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "abc"  # nothing else: the line went to the descriptor
    [line] = lines
    assert line["exit_code"] == 0 and line["container_id"].startswith("nspawn-")
    assert ran.stderr.split() == ["0", "1", "2", "3"]  # stdio, and ls's own directory


@_needs_root
def test_json_line_starts_a_line_of_its_own_after_output_without_a_newline():
    ran = nspawn("run", "--json", "--", "/bin/sh", "-c", "printf 'no newline'")
    assert ran.returncode == 0, ran.stderr
    first, second = ran.stdout.splitlines()
    assert first == "no newline" and json.loads(second)["exit_code"] == 0


# --- item 3: -q and -v after the command

def test_quiet_and_verbose_count_after_the_command_too(monkeypatch):
    for argv, level in ((["run", "-q"], -1), (["run", "-v", "-v"], 2), (["-v", "run", "-q"], 0)):
        given = []
        monkeypatch.setattr(runcmd, "run_and_report", lambda path, overrides, **how: given.append(how) or (0, None))
        ran = CliRunner().invoke(cli, [*argv, "--", "/bin/true"])
        assert ran.exit_code == 0, ran.output
        assert given[0]["verbosity"] == level, argv


def test_every_command_takes_q_and_v(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"process_executable": "/bin/true"}')
    assert nspawn("validate", "-q", str(good)).stdout == ""  # ok lines are not printed at -q
    assert nspawn("validate", str(good), "-v").stdout == f"{good}: ok\n"
    for command in (["ps", "-q"], ["doctor", "-v"], ["cleanup", "-q"], ["batch", "-q", "--help"]):
        ran = nspawn(*command)
        assert "No such option" not in ran.stderr, command


def test_the_fast_path_recognises_verbosity_flags():
    assert entry.plain_run(["run", "-q", "--", "/bin/true"]) == (None, {"process_executable": "/bin/true",
                                                                        "process_arguments": []}, -1)
    assert entry.plain_run(["-v", "run", "-v", "--", "x", "-q"]) == (None, {"process_executable": "x",
                                                                            "process_arguments": ["-q"]}, 2)
    assert entry.plain_run(["run", "-q", "--json", "--", "x"]) is None  # anything else: click


def test_run_q_c_file_stays_off_click(tmp_path):
    from tests.test_cli import _entry

    bad = tmp_path / "bad.json"
    bad.write_text('{"process_executable": "x",\n "max_ram_mb": "lots"}')
    (code, click_imported, rich_imported), err = _entry("run", "-q", "-c", str(bad))
    assert (code, click_imported, rich_imported) == (2, False, False)
    assert "max_ram_mb" in err  # errors are shown at -q


# --- item 4: binds and environment as docker and systemd-nspawn spell them

def test_bind_forms(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ran, (overrides, _) = _overrides(monkeypatch, "--bind", "data:/data:RO", "--bind", "/srv", "--bind", "/opt:ro",
                                     "--bind", "/a:/b:Rw", "--bind-ro", "/etc", "--bind-ro", "/usr:/u",
                                     "--bind", "C:\\src:C:\\dst:ro", "--", "/bin/true")
    assert ran.exit_code == 0, ran.output
    data = str(tmp_path / "data")
    assert overrides["mounts"] == [
        {"host_path": data, "container_path": "/data", "read_only": True},
        {"host_path": "/srv", "container_path": "/srv", "read_only": False},
        {"host_path": "/opt", "container_path": "/opt", "read_only": True},
        {"host_path": "/a", "container_path": "/b", "read_only": False},
        {"host_path": "C:\\src", "container_path": "C:\\dst", "read_only": True},
        {"host_path": "/etc", "container_path": "/etc", "read_only": True},
        {"host_path": "/usr", "container_path": "/u", "read_only": True},
    ]
    config = load_config(None, {"process_executable": "/bin/true", "mounts": overrides["mounts"][1:2]})
    assert config.mounts == (Mount("/srv", "/srv", False),)


def test_bind_that_is_not_a_bind_is_refused(monkeypatch):
    for value in (":/x", "/a:/b:rx", "/a::/b"):
        ran, (overrides, _) = _overrides(monkeypatch, "--bind", value, "--", "/bin/true")
        assert ran.exit_code == 2 and "--bind" in ran.output, value


def test_setenv_name_alone_passes_the_host_s_value(monkeypatch):
    monkeypatch.setenv("NSPAWN_TEST_HOST_VALUE", "from host")
    monkeypatch.delenv("NSPAWN_TEST_UNSET", raising=False)
    ran, (overrides, _) = _overrides(monkeypatch, "-E", "NSPAWN_TEST_HOST_VALUE", "-E", "B=", "--", "/bin/true")
    assert ran.exit_code == 0, ran.output
    assert overrides["environment"] == {"NSPAWN_TEST_HOST_VALUE": "from host", "B": ""}
    ran, _ = _overrides(monkeypatch, "-E", "NSPAWN_TEST_UNSET", "--", "/bin/true")
    assert ran.exit_code == 2 and "'NSPAWN_TEST_UNSET' is not set on this host" in ran.output


def test_env_file_in_docker_s_format(monkeypatch, tmp_path):
    monkeypatch.setenv("NSPAWN_TEST_HOST_VALUE", "from host")
    env = tmp_path / "app.env"
    env.write_text("# a comment\n\nA=1\n  B=two words \nQ=\"quoted\"\nNSPAWN_TEST_HOST_VALUE\nC=x=y\nA=last\n")
    ran, (overrides, _) = _overrides(monkeypatch, "--env-file", str(env), "-E", "C=from -E", "--", "/bin/true")
    assert ran.exit_code == 0, ran.output
    assert overrides["environment"] == {"A": "last", "B": "two words ", "Q": '"quoted"',
                                        "NSPAWN_TEST_HOST_VALUE": "from host", "C": "from -E"}


@pytest.mark.parametrize("text, said", [
    ("A=1\nBAD NAME=2\n", ":2: 'BAD NAME=2'"),
    ("A=1\n\n=value\n", ":3: '=value'"),
    ("NSPAWN_TEST_UNSET\n", ":1: NSPAWN_TEST_UNSET is not set on this host"),
])
def test_env_file_names_the_bad_line(monkeypatch, tmp_path, text, said):
    monkeypatch.delenv("NSPAWN_TEST_UNSET", raising=False)
    env = tmp_path / "bad.env"
    env.write_text(text)
    ran, (overrides, _) = _overrides(monkeypatch, "--env-file", str(env), "--", "/bin/true")
    assert ran.exit_code == 2 and overrides is None
    assert f"{env}{said}" in ran.output


def test_env_file_that_cannot_be_read(monkeypatch, tmp_path):
    ran, _ = _overrides(monkeypatch, "--env-file", str(tmp_path / "missing.env"), "--", "/bin/true")
    assert ran.exit_code == 2 and "missing.env" in ran.output


# --- item 8: --json for validate and doctor

def test_validate_json_one_object_per_file(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"process_executable": "/bin/true"}')
    bad.write_text('{"process_executable": "x",\n "max_ram_mb": "lots", "netwrk": 1}')
    ran = nspawn("validate", "--json", str(good), str(bad))
    assert ran.returncode == 2
    first, second = (json.loads(line) for line in ran.stdout.splitlines())
    assert first == {"path": str(good), "ok": True, "problems": []}
    assert second["path"] == str(bad) and second["ok"] is False and len(second["problems"]) == 2
    lengthy = second["problems"][0]
    assert (lengthy["source"], lengthy["path"], lengthy["line"], lengthy["exit_code"]) == (str(bad), "$.max_ram_mb", 2, 2)
    assert lengthy["text"] in ran.stderr


def test_doctor_json_checks_as_objects(monkeypatch):
    from nspawn import backends

    monkeypatch.setattr(backends, "host_default", lambda: "linux")
    monkeypatch.setattr(backends.load("linux"), "doctor", lambda config: [("namespaces", True, "usable"),
                                                                         ("memory", False, "no controller")])
    ran = CliRunner().invoke(cli, ["doctor", "--json"])
    assert ran.exit_code == 1
    assert [json.loads(line) for line in ran.output.splitlines()] == [
        {"name": "namespaces", "ok": True, "detail": "usable"}, {"name": "memory", "ok": False, "detail": "no controller"}]


def test_doctor_json_for_a_config_that_does_not_load(tmp_path):
    ran = nspawn("doctor", "--json", "-c", str(tmp_path / "missing.json"))
    assert ran.returncode == 2
    [line] = _json_lines(ran.stdout)
    assert line["exit_code"] == 2 and "cannot read the config file" in line["error"]


# --- item 9: PowerShell completion

def test_powershell_completion_script():
    script = nspawn("completion", "powershell").stdout
    assert script.startswith("Register-ArgumentCompleter -Native -CommandName nspawn")
    assert '$env:_NSPAWN_COMPLETE = "powershell_complete"' in script
    assert "COMP_WORDS" in script and "CompletionResult" in script
    assert script.count("{") == script.count("}")
    # click's protocol, both ways (click's echo may end the script with one more newline)
    assert nspawn(env={"_NSPAWN_COMPLETE": "powershell_source"}).stdout.rstrip() == script.rstrip()


def _complete(line: str, incomplete: str) -> list[list[str]]:
    ran = nspawn(env={"_NSPAWN_COMPLETE": "powershell_complete", "COMP_WORDS": line, "COMP_INCOMPLETE": incomplete})
    assert ran.returncode == 0, ran.stderr
    return [answer.split("\t") for answer in ran.stdout.splitlines()]


def test_powershell_completion_protocol_answers_a_partial_command_line():
    assert [kind_value[:2] for kind_value in _complete("nspawn ru", "ru")] == [["plain", "run"]]
    assert ["plain", "--memory"] in [a[:2] for a in _complete("nspawn run --mem", "--mem")]
    assert [a[1] for a in _complete("nspawn run --network ", "")] == ["none", "host", "nat"]
    assert [a[1] for a in _complete("nspawn completion p", "p")] == ["powershell"]
    assert _complete("nspawn run -c ", "")[0][0] == "file"  # paths: PowerShell's own completion
