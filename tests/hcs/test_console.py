"""The process's emulated console (issue 12, HCS): EmulateConsole and ConsoleSize in the process
document when a terminal is wanted, shown by the dry run, and a change of the launcher's console
size passed on by HcsModifyProcess. Runs against the simulator, whose emulated console is a
pseudo-terminal the process controls, sized by ConsoleSize."""

from __future__ import annotations

import json

import pytest

from nspawn.backends.hcs import documents
from tests.conftest import nspawn
from tests.hcs.test_documents import errors
from tests.hcs_sim.ledger import live
from tests.linux.terminals import Launcher

APIS = pytest.mark.parametrize("api", ["v1", "v2"])
HCS = ["--backend", "hcs", "--parent-layer", "C:\\layers\\parent", "-D", "C:\\job"]


def _dry_run(*options: str) -> dict:
    ran = nspawn("run", "--dry-run", *HCS, *options, "--", "tool.exe")
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_the_dry_run_shows_the_console_and_how_it_is_resized():
    plan = _dry_run("-t")
    for api in ("v1", "v2"):
        process = plan[api]["process"]
        assert errors(f"{api}_process", process) == []
        # No console here to take a size from (the test's output is a pipe): HCS's default.
        assert process["EmulateConsole"] is True and process["CreateStdErrPipe"] is False
        assert "ConsoleSize" not in process
    assert plan["console_resize"] == {"Operation": "ConsoleSize", "ConsoleSize": {"Height": "<rows>", "Width": "<columns>"}}


@pytest.mark.parametrize("options", [(), ("--no-tty",)], ids=["auto-on-pipes", "never"])
def test_without_a_console_the_process_gets_pipes(options):
    plan = _dry_run(*options)
    process = plan["v2"]["process"]
    assert process["EmulateConsole"] is False and process["CreateStdErrPipe"] is True
    assert "ConsoleSize" not in process and plan["console_resize"] is None


def test_a_known_size_is_the_documents_height_and_width():
    plan = _plan_for_documents()
    for api in ("v1", "v2"):
        doc = documents.process(plan, (30, 100))
        assert errors(f"{api}_process", doc) == []
        assert doc["ConsoleSize"] == [30, 100] and doc["EmulateConsole"] is True


def _plan_for_documents():
    from nspawn.backends import hcs
    from nspawn.config.resolve import load_config

    return hcs.plan(load_config(None, {"backend": "hcs", "parent_layer_directory": "C:\\l",
                                       "process_executable": "x.exe", "tty": "always"}))


SIZED = """stty size
test -t 0 && test -t 1 && echo both are the console
trap 'stty size' WINCH
echo ready
while [ ! -e stop ]; do sleep 0.05; done
read line
echo "got $line"
"""


@APIS
def test_the_console_has_the_launchers_size_and_follows_it(host, api):
    config = host.config(process_executable=host.script("sized.sh", SIZED), hcs_api=api)
    with Launcher(["run", "-c", str(config)], rows=30, columns=100, env=host.env(None)) as t:
        t.expect(b"30 100")
        t.expect(b"both are the console")
        t.expect(b"ready")
        t.resize(40, 120)
        t.expect(b"40 120")
        (host.job / "stop").touch()
        t.type(b"hello\r")
        t.expect(b"got hello")
        assert t.wait() == 0, t.stderr()
    ledger = host._ledger()
    assert live(ledger) == {} and host.scratch_folders() == [], live(ledger)  # the console's handles too
    run_calls = ledger["calls"]
    [create] = [c for c in run_calls if c["call"].endswith("!HcsCreateProcess")]
    document = json.loads(next(a for a in create["args"] if isinstance(a, str) and "CommandLine" in a))
    assert document["EmulateConsole"] is True and document["ConsoleSize"] == [30, 100]
    assert document["CreateStdErrPipe"] is False
    modified = [json.loads(a) for c in run_calls if c["call"].endswith("!HcsModifyProcess")
                for a in c["args"] if isinstance(a, str)]
    assert {"Operation": "ConsoleSize", "ConsoleSize": {"Height": 40, "Width": 120}} in modified


@APIS
def test_a_batch_job_gets_pipes_even_when_it_asks_for_a_terminal(host, api, tmp_path):
    config = host.config(process_executable=host.script("t.sh", "test -t 1 || echo pipes\n"), tty="always",
                         hcs_api=api)
    ran = nspawn("batch", str(config), "--logs", str(tmp_path / "logs"), env=host.env(None))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / "logs" / "config.stdout").read_text() == "pipes\n"
    [create] = [c for c in host._ledger()["calls"] if c["call"].endswith("!HcsCreateProcess")]
    document = json.loads(next(a for a in create["args"] if isinstance(a, str) and "CommandLine" in a))
    assert document["EmulateConsole"] is False and document["CreateStdErrPipe"] is True
