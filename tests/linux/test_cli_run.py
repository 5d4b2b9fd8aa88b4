"""`nspawn run` from the command line: the plain forms (no click) and the click forms run the
same container the same way."""

from __future__ import annotations

import json

from tests.conftest import nspawn
from tests.linux.conftest import needs_root

pytestmark = needs_root

SCRIPT = "echo out; echo err >&2; exit 3"


def test_plain_and_click_forms_give_the_same_run(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"process_executable": "/bin/sh", "process_arguments": ["-c", SCRIPT]}))
    runs = [nspawn("run", "-c", str(path)), nspawn("-q", "run", "-c", str(path)),
            nspawn("run", "--", "/bin/sh", "-c", SCRIPT), nspawn("run", "--hostname", "x", "--", "/bin/sh", "-c", SCRIPT)]
    for r in runs:
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


def test_json_result_after_the_output(tmp_path):
    r = nspawn("run", "--json", "--", "/bin/sh", "-c", "echo hi")
    out, result = r.stdout.splitlines()
    assert r.returncode == 0 and out == "hi" and json.loads(result)["exit_code"] == 0


def test_a_cpu_count_is_taken_from_the_cpus_the_launcher_may_use():
    import os
    import subprocess
    import sys

    last = max(os.sched_getaffinity(0))
    r = subprocess.run(["taskset", "-c", str(last), sys.executable, "-m", "nspawn", "run", "--cpus", "1", "--",
                        "/bin/grep", "Cpus_allowed_list", "/proc/self/status"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Cpus_allowed_list:", str(last)]


def test_a_reader_that_goes_away_ends_neither_the_run_nor_the_output_file(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    launcher = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "-D", str(tmp_path), "--stdout-file", "log.txt",
                                 "--", "/bin/sh", "-c", "echo first; sleep 0.3; seq 1 100000"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert launcher.stdout.readline() == b"first\n"
    launcher.stdout.close()  # as `| head -1` does
    assert launcher.wait(timeout=60) == 0, launcher.stderr.read()
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 100001



def test_the_run_passes_exactly_the_environment_the_dry_run_shows(monkeypatch):
    """The plan decides the environment (the host's TERM included, or not when unset); the
    payload gets exactly that, nothing added or dropped on the way. The user's HOME, USER and
    LOGNAME are the container's passwd file's, read at run time: the dry run says so."""
    args = ["-E", "GREETING=hi", "--", "/usr/bin/env", "-0"]
    for term in ("vt220", None):
        if term:
            monkeypatch.setenv("TERM", term)
        else:
            monkeypatch.delenv("TERM", raising=False)
        shown = json.loads(nspawn("run", "--dry-run", *args).stdout)["env"]
        run = nspawn("run", *args)
        assert run.returncode == 0, run.stderr
        got = dict(item.split("=", 1) for item in run.stdout.split("\0") if item)
        at_run_time = {name for name, value in shown.items() if value.startswith("<") and "at run time" in value}
        assert at_run_time == {"HOME", "USER", "LOGNAME"}, shown
        shown.update(HOME="/root", USER="root", LOGNAME="root")
        assert got == shown and got.get("TERM") == term and got["GREETING"] == "hi", (got, shown)
