"""The command line as a user meets it: a fresh interpreter, real files, exit codes."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import nspawn
from nspawn import runcmd
from nspawn.cli import COMMANDS, cli
from nspawn.config.fields import FIELDS
from nspawn.config.model import Mount, Tmpfs
from nspawn.config.resolve import load_config
from tests.linux.conftest import ROOT, _scratch, leftovers, needs_root  # noqa: F401 (_scratch: the fixture)

ORIGINAL = "configs/hostcompute_nspawn.json"


def test_version_and_help_list_exit_codes():
    assert nspawn("--version").stdout.startswith("nspawn, version ")
    help_text = nspawn("--help").stdout
    for code in ("124", "125", "126", "127", "128+N"):
        assert code in help_text


def test_version_and_run_help_answered_without_click_are_click_s_own():
    """nspawn.entry answers these without importing click: the same text, exit 0, and no click."""
    from nspawn.cli.runhelp import render

    with open(os.path.join(ROOT, "nspawn", "cli", "run_help.txt"), encoding="utf-8") as f:
        assert f.read() == render(), "run's help changed: python -m nspawn.cli.runhelp regenerates run_help.txt"
    clicks = CliRunner().invoke(cli, ["--version"], prog_name="nspawn")
    code = ("import sys; sys.argv[0] = 'nspawn'; from nspawn.entry import main\ntry:\n    main()\n"
            "except SystemExit as e:\n    print(e.code, 'click' in sys.modules, file=sys.stderr)")
    for argv, expected, width in ((["--version"], clicks.output, "80"), (["-V"], clicks.output, "80"),
                                  (["run", "--help"], render(), "200"), (["run", "-h"], render(), "80")):
        ran = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "COLUMNS": width})
        assert (ran.stdout, ran.stderr) == (expected, "0 False\n"), argv
    # narrower than click's widest help: click renders it, for that width
    narrow = subprocess.run([sys.executable, "-c", code, "run", "--help"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "60"})
    assert narrow.stderr == "0 True\n" and narrow.stdout != render()
    assert max(map(len, narrow.stdout.splitlines())) <= 60


def test_help_lists_every_command_and_each_has_its_own():
    listed = nspawn("--help").stdout.split("Commands:")[1]
    for name in COMMANDS:
        assert f"\n  {name} " in listed
        assert nspawn(name, "--help").returncode == 0


def test_a_command_s_module_is_imported_only_when_it_runs():
    code = ("import sys\nfrom nspawn.cli import cli\n"
            "loaded = lambda: sorted(m for m in sys.modules if m.startswith(('nspawn.cli.', 'nspawn.batch')))\n"
            "print(loaded(), file=sys.stderr)\n"
            "try:\n    cli(['run', '--help'], prog_name='nspawn')\nexcept SystemExit:\n    pass\n"
            "print(loaded(), file=sys.stderr)")
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert ran.stderr.splitlines() == ["[]", "['nspawn.cli.params', 'nspawn.cli.run']"]


def test_every_field_with_an_option_is_on_run_help():
    help_text = " ".join(nspawn("run", "--help").stdout.split())
    for field in FIELDS:
        if field.option is not None:
            assert f" {', '.join(field.option.flags)} " in help_text, field.key
            assert " ".join(field.option.help.split()) in help_text, field.key


# A command line for each field with an option, and the value it gives the config.
def _option_samples(here: str) -> dict:
    return {
        "parent_layer_directory": (["--parent-layer", "root"], os.path.join(here, "root")),
        "process_directory": (["-D", "job"], os.path.join(here, "job")),
        "mapped_directory": (["--mapped-directory", "/job"], "/job"),
        "mapped_directory_read_only": (["--read-only"], True),
        "stdout_filename": (["--stdout-file", "out.txt"], "out.txt"),
        "environment": (["-E", "A=1", "--setenv", "B=x=y"], {"A": "1", "B": "x=y"}),
        "working_directory": (["--chdir", "/job/sub"], "/job/sub"),
        "hostname": (["--hostname", "box"], "box"),
        "mounts": (["--bind", "data:/data:ro", "--bind", "/srv:/srv"],
                   (Mount(os.path.join(here, "data"), "/data", True), Mount("/srv", "/srv", False))),
        "tmpfs": (["--tmpfs", "/scratch:64M", "--tmpfs", "/cache"], (Tmpfs("/scratch", 64), Tmpfs("/cache", 0))),
        "seccomp": (["--seccomp", "unconfined"], "unconfined"),
        "user": (["-u", "root:nogroup"], "root:nogroup"),  # root: --allow-mknod is refused for any other user
        "private_users": (["--private-users", "pick"], "pick"),
        "resolv_conf": (["--resolv-conf", "none"], "none"),
        "timezone": (["--timezone", "keep"], "keep"),
        "tty": (["-t"], "always"),
        "allow_mknod": (["--allow-mknod"], True),
        "host_view": (["--host-view", "full"], "full"),
        "tmp_size_mb": (["--tmp-size", "256M"], 256),
        "shm_size_mb": (["--shm-size", "1G"], 1024),
        "scratch_size_mb": (["--scratch-size", "100"], 100),
        "network": (["--network", "nat"], "nat"),
        "ports": (["-p", "8080:80", "--publish", "127.0.0.1:5353:53/udp"], ("8080:80", "127.0.0.1:5353:53/udp")),
        "isolation": (["--isolation", "process"], "process"),
        "backend": (["--backend", "linux"], "linux"),
        "hcs_api": (["--hcs-api", "v1"], "v1"),
        "timeout_seconds": (["--timeout", "2m"], 120),
        "stop_grace_seconds": (["--grace", "500ms"], 0.5),
        "max_ram_mb": (["--memory", "1.5G"], 1536),
        "cpus_count": (["--cpus", "2"], 2),
        "cpu_affinity_hex": (["--affinity", "0-1,4"], 0b10011),
        "max_cpu_percent": (["--cpu-percent", "25"], 25),
        "max_storage_iops": (["--iops", "100"], 100),
        "max_storage_bandwidth_bytes_per_sec": (["--io-bandwidth", "10M"], 10 << 20),
        "max_processes": (["--max-processes", "50"], 50),
        "image": (["--image", "alpine:3"], "alpine:3"),  # exclusive with --parent-layer: checked apart
    }


def test_each_option_reaches_the_config_under_its_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # host paths on the command line are relative to it
    samples = _option_samples(str(tmp_path))
    assert set(samples) == {f.key for f in FIELDS if f.option is not None}
    given = []

    def run_and_report(path, overrides, **how):
        given.append(overrides)
        return 0, None

    monkeypatch.setattr(runcmd, "run_and_report", run_and_report)
    argv = [arg for field_argv, _ in samples.values() for arg in field_argv]
    ran = CliRunner().invoke(cli, ["run", *argv, "--", "tool", "one two"])
    assert ran.exit_code == 0, ran.output
    # A field only other backends read is refused by this Linux config: it reaches the config
    # of the backend that reads it.
    other = {f.key for f in FIELDS if f.backends and "linux" not in f.backends}
    # Refused beside --parent-layer (an image, host_view full) or beside an image (host_view full,
    # private users): each checked in a config without them
    config = load_config(None, {k: v for k, v in given[0].items() if k not in other | {"image", "host_view"}})
    assert (config.process_executable, config.process_arguments) == ("tool", ("one two",))
    imaged = load_config(None, {k: v for k, v in given[0].items()
                                if k not in other | {"parent_layer_directory", "host_view", "private_users"}})
    alone = load_config(None, {"process_executable": "x", "host_view": given[0]["host_view"]})
    theirs = load_config(None, {"backend": "hcs", "parent_layer_directory": "C:\\l", "process_executable": "x.exe",
                                **{k: given[0][k] for k in other}})
    for field in FIELDS:
        if field.option is not None:
            holder = theirs if field.key in other else imaged if field.key == "image" else alone if field.key == "host_view" else config
            value = getattr(holder.limits if field.limit else holder, field.name)
            assert value == samples[field.key][1], field.key


def test_schema_is_printed_and_is_the_packaged_one():
    out = json.loads(nspawn("schema").stdout)
    assert out["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "process_executable" in out["properties"]


def test_validate_reports_ok_and_errors_with_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"process_executable": "x",\n "max_ram_mb": "lots"}')
    good = nspawn("validate", ORIGINAL)
    assert good.returncode == 0 and "ok" in good.stdout
    result = nspawn("validate", ORIGINAL, str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f'error: {bad}:2:16: $.max_ram_mb: found "lots"; expected a whole number'
    assert "Traceback" not in result.stderr


def test_validate_host_runs_host_checks(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"process_executable": "/definitely/missing"}))
    assert nspawn("validate", str(config)).returncode == 0
    assert nspawn("validate", "--host", str(config)).returncode == 2


def test_dry_run_of_the_original_prints_hcs_documents_on_any_os():
    result = nspawn("run", "--dry-run", "-c", ORIGINAL)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    v1 = plan["v1"]["compute_system"]
    assert v1["SystemType"] == "Container" and v1["MemoryMaximumInMB"] == 512 and v1["ProcessorCount"] == 1
    assert v1["MappedDirectories"][0] == {"HostPath": "C:\\projects\\hostcompute_nspawn\\build\\bin",
                                         "ContainerPath": "c:\\nspawndir", "ReadOnly": False}
    assert plan["v2"]["compute_system"]["Container"]["Memory"] == {"SizeInMB": 512}
    assert plan["v2"]["process"]["CommandLine"] == "c:\\nspawndir\\hello.exe foo bar baz"


def test_options_override_the_file(tmp_path):
    result = nspawn("run", "--dry-run", "-c", ORIGINAL, "--memory", "1G", "--cpu-percent", "25",
                    "--hostname", "box", "-E", "A=1", "--", "C:/tools/x.exe", "one two")
    plan = json.loads(result.stdout)
    system = plan["v2"]["compute_system"]["Container"]
    assert system["Memory"] == {"SizeInMB": 1024}
    assert system["Processor"] == {"Maximum": 2500}
    assert system["GuestOs"] == {"HostName": "box"}
    assert plan["v2"]["process"]["Environment"] == {"A": "1"}
    assert plan["v2"]["process"]["CommandLine"] == 'C:\\tools\\x.exe "one two"'


def test_bad_override_is_blamed_on_the_command_line(tmp_path):
    result = nspawn("run", "--dry-run", "-c", ORIGINAL, "--network", "host")
    assert result.returncode == 2
    assert result.stderr.startswith("error: command line: $.network: found 'host'")


def test_options_alone_describe_a_run():
    result = nspawn("run", "--dry-run", "--backend", "hcs", "--parent-layer", "C:/layers/base", "--memory", "256",
                    "--", "C:/Windows/System32/cmd.exe", "/c", "ver")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["v1"]["compute_system"]["MemoryMaximumInMB"] == 256


def test_hcs_needs_a_parent_layer():
    result = nspawn("run", "--dry-run", "--backend", "hcs", "--", "C:/x.exe")
    assert result.returncode == 2 and "$.parent_layer_directory: missing" in result.stderr


def test_usage_errors_exit_2():
    assert nspawn("run").returncode == 2
    assert nspawn("run", "--memory", "lots", "--", "x").returncode == 2
    assert nspawn("run", "--affinity", "0xZZ", "--", "x").returncode == 2
    assert nspawn("no-such-command").returncode == 2


def test_a_missing_config_file_is_a_config_error():
    result = nspawn("run", "-c", "/no/such/config.json")
    assert result.returncode == 2 and "cannot read the config file" in result.stderr


def test_hcs_run_on_linux_is_refused_before_anything_is_made():
    result = nspawn("run", "--backend", "hcs", "--parent-layer", "C:/layers/base", "--", "C:/x.exe")
    assert result.returncode == 2, result.stderr
    assert "for a Windows host" in result.stderr and "--dry-run" in result.stderr and "Traceback" not in result.stderr


def test_completion_script():
    assert "_NSPAWN_COMPLETE" in nspawn("completion", "bash").stdout


def _entry(*argv) -> tuple[tuple[int, bool, bool], str]:
    """Run the console entry point in a fresh interpreter: ((exit code, whether click was
    imported, whether rich was), stderr). An audit hook sees the imports, since the plain forms
    end with os._exit, before any code after main() could look."""
    code = ("import sys\n"
            "sys.addaudithook(lambda event, args: event == 'import' and args[0] in ('click', 'rich')"
            " and print(args[0], flush=True))\n"
            "from nspawn.entry import main\nsys.argv = ['nspawn', *sys.argv[1:]]\nmain()")
    ran = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    imported = ran.stdout.split()
    return (ran.returncode, "click" in imported, "rich" in imported), ran.stderr


def test_plain_run_forms_skip_click_and_report_like_the_cli(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"process_executable": "x",\n "max_ram_mb": "lots"}')
    fast, fast_err = _entry("run", "-c", str(bad))
    assert fast == (2, False, False)
    slow, slow_err = _entry("run", "--backend", "auto", "-c", str(bad))  # any other option: click parses
    assert slow == (2, True, False)
    assert fast_err == slow_err == f'error: {bad}:2:16: $.max_ram_mb: found "lots"; expected a whole number\n'
    command, command_err = _entry("run", "--", "", "arg")
    assert command == (2, False, False) and "process_executable" in command_err


def test_forms_that_are_not_plain_go_through_click(tmp_path):
    directory, directory_err = _entry("run", "-c", str(tmp_path))  # a directory: click says so
    assert directory == (2, True, False) and "is a directory" in directory_err
    assert _entry("run", "--")[0] == (2, True, False)


def _needs_root(test):
    for mark in needs_root:
        test = mark(test)
    return test


@_needs_root
def test_a_plain_run_that_runs_and_reports_imports_neither_click_nor_rich(tmp_path, _scratch):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"process_executable": "/bin/sh", "process_arguments": ["-c", "kill -9 $$"]}))
    for argv in (("run", "-c", str(config)), ("run", "--", "/bin/sh", "-c", "kill -9 $$")):
        ran, err = _entry(*argv)
        assert ran == (137, False, False), err
        assert err == "warning: the container process was killed by signal 9\n"
    assert leftovers(str(_scratch), []) == []


@_needs_root
def test_a_run_started_with_its_output_streams_closed_still_exits_with_the_container_code(_scratch):
    for closed in (">&-", "2>&-", ">&- 2>&-"):
        ran = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", sys.executable, "-m", "nspawn", "run", "--",
                              "/bin/sh", "-c", "exit 7"], cwd=ROOT, capture_output=True, text=True)
        assert ran.returncode == 7, (closed, ran.stderr)
    assert leftovers(str(_scratch), []) == []


@pytest.mark.skipif(sys.platform == "win32", reason="ctypes-windows-sdk is a dependency on Windows")
@pytest.mark.parametrize("command, code", [
    (["ps"], 0), (["ps", "--json"], 0), (["cleanup"], 0),
    (["run", "--dry-run", "-c", "configs/windows-build.json"], 0),
    (["doctor", "-c", "configs/windows-build.json"], 1),  # 1: this host cannot run it, which it says
])
def test_the_cli_works_without_ctypes_windows_sdk(tmp_path, command, code):
    """A plain `pip install nspawn` off Windows has no ctypes-windows-sdk (the tests' extra has
    it): asking HCS for its systems there finds none, a Windows config's plan still prints, and
    doctor says HCS cannot run here; none of them fails."""
    script = ("import runpy, sys; sys.modules['cwinsdk'] = None; sys.argv = ['nspawn', *sys.argv[1:]]; "
              "runpy.run_module('nspawn', run_name='__main__')")
    env = {**os.environ, "NSPAWN_STATE_DIR": str(tmp_path / "state")}
    env.pop("NSPAWN_HCS_LIBRARY", None)
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert (done.returncode, "internal error" in done.stderr) == (code, False), done.stderr
