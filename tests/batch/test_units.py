"""Source expansion, admission, and the report and JUnit files, without running containers."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from nspawn.batch import sources
from nspawn.batch.admission import Admission, demand_of
from nspawn.hostfacts import memory_available
from nspawn.units import MIB
from nspawn.batch.jobs import FAILED, INTERRUPTED, NOT_RUN, PASSED, Demand, Job, JobResult, not_run
from nspawn.batch.junit import JUnit
from nspawn.batch.report import Report
from nspawn.batch.scheduler import Outcome
from nspawn.config.resolve import load_config
from tests.batch.junit_schema import violations


def _touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_files_directories_and_globs_expand_in_order_each_once(tmp_path):
    a = _touch(tmp_path / "d" / "b.json")
    b = _touch(tmp_path / "d" / "a.json")
    _touch(tmp_path / "d" / "notes.txt")
    _touch(tmp_path / "d" / "sub" / "deep.json")
    c = _touch(tmp_path / "g" / "x1.json")
    d = _touch(tmp_path / "g" / "x2.json")
    files, problems = sources.expand([str(tmp_path / "d"), str(tmp_path / "g" / "x*.json"), a, str(tmp_path / "g" / "x1.json")])
    assert problems == []
    assert files == [b, a, c, d]  # the directory sorted, not recursive; duplicates dropped


def test_paths_that_name_nothing_are_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    files, problems = sources.expand([str(tmp_path / "missing.json"), str(tmp_path / "empty"), str(tmp_path / "*.nope")])
    assert files == []
    assert [p.message for p in problems] == ["no such file", "the directory holds no *.json file", "the pattern matches no file"]


def test_job_names_are_unique_and_safe_for_file_names(tmp_path):
    files = [_touch(tmp_path / "a" / "x.json"), _touch(tmp_path / "b" / "x.json"), _touch(tmp_path / "a__x.json")]
    names = sources.job_names(files)
    assert names == ["a__x", "b__x", "a__x-2"]
    assert all(os.sep not in n for n in names)


def test_demand_is_the_memory_limit_and_the_pinned_cpus():
    config = load_config(None, {"process_executable": "/bin/true", "max_ram_mb": 64, "cpu_affinity_hex": "0x5"})
    assert demand_of(config) == Demand(64 * MIB, (0, 2))
    assert demand_of(load_config(None, {"process_executable": "/bin/true"})) == Demand(0, ())


def test_admission_holds_memory_and_cpus_until_released():
    admission = Admission(memory_budget=200 * MIB)
    big, small, pinned = Demand(120 * MIB), Demand(64 * MIB), Demand(0, (1,))
    assert admission.admit(big) and admission.admit(small)
    assert not admission.admit(small)  # 248 MiB > 200 MiB
    assert admission.admit(Demand())  # no limit: nothing to reserve
    assert admission.admit(pinned) and not admission.admit(Demand(0, (0, 1)))
    admission.release(big)
    assert admission.admit(small) and admission.admit(Demand(0, (0,)))
    admission.release(pinned)
    assert admission.memory_reserved == 128 * MIB and admission.cpus_taken == {0}


def test_jobs_asking_for_a_number_of_cpus_are_given_free_ones():
    count_only = load_config(None, {"process_executable": "/bin/true", "cpus_count": 2})
    assert demand_of(count_only) == Demand(0, (), 2)
    both = load_config(None, {"process_executable": "/bin/true", "cpus_count": 1, "cpu_affinity_hex": "0x3"})
    assert demand_of(both) == Demand(0, (0,))  # the count taken from the named CPUs, as the backend does
    admission = Admission(None, cpus=[0, 1, 2])
    first = admission.admit(Demand(0, (), 2))
    assert first.cpus == (0, 1) and admission.admit(Demand(0, (), 2)) is None
    assert admission.admit(Demand(0, (), 1)).cpus == (2,)
    admission.release(first)
    assert admission.admit(Demand(0, (0,))) is not None and admission.cpus_taken == {0, 2}


def test_a_job_bigger_than_the_budget_never_fits_and_says_so():
    admission = Admission(memory_budget=100 * MIB)
    assert admission.never_fits(Demand(64 * MIB)) is None
    assert "200 MiB exceeds the 100 MiB" in admission.never_fits(Demand(200 * MIB))
    assert Admission(None).never_fits(Demand(1 << 50)) is None  # a host that does not say: not admitted by memory


def test_a_job_asking_more_cpus_than_the_launcher_may_use_never_fits_and_says_so():
    admission = Admission(None, cpus=[0, 1])
    assert admission.never_fits(Demand(0, cpu_count=2)) is None
    assert "asks for 3 CPUs and this launcher may use 2" in admission.never_fits(Demand(0, cpu_count=3))


def test_memory_available_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:  512 kB\n")
    assert memory_available(str(meminfo)) == 512 * 1024
    assert memory_available(str(tmp_path / "none")) is None


def _results():
    demand = Demand(64 * MIB, (1,))
    run = {"container_id": "c1", "timings": {"setup": 0.01, "run": 0.2, "rollback": 0.003}, "limits_applied": {"max_ram_mb": "67108864 bytes"},
           "limits_not_enforced": {"max_storage_iops": "no block device"}, "rolled_back": ["scratch /s/c1", "process 12"],
           "rollback_failures": [], "error": None, "timed_out": False, "oom_killed": False, "signal": None, "interrupted_by": None}
    ok = JobResult("ok", "/c/ok.json", PASSED, 0, attempts=1, started=100.0, ended=100.25, run=run, demand=demand,
                   stdout_tail="hello\n", peak_memory_bytes=1 << 20)
    failed = JobResult("bad exit", "/c/f.json", FAILED, 3, attempts=1, started=100.0, ended=101.0, run={**run, "container_id": "c2"},
                       stdout_tail="".join(f"line {i}\n" for i in range(500)), stderr_tail="oops \x00\x1b[31m\x07 done\n")
    timeout = JobResult("slow", "/c/s.json", FAILED, 124, error="the timeout expired; the container was stopped", attempts=1,
                        started=100.0, ended=102.0, run={**run, "timed_out": True, "signal": 15})
    launcher = JobResult("broken", "/c/b.json", FAILED, 125, error="setting up failed; not released: cgroup /x: busy", attempts=3,
                         started=100.0, ended=100.1, run={**run, "error": "setting up failed", "rollback_failures": ["cgroup /x: busy"]})
    refused = not_run(Job("config", "/c/c.json"), "/c/c.json:1:2: $.x: unknown key", exit_code=2)
    stopped = JobResult("stopped", "/c/t.json", INTERRUPTED, 130, error="stopped by signal 2; everything made was rolled back",
                        attempts=1, started=100.0, ended=100.5, run={**run, "interrupted_by": 2})
    skipped = not_run(Job("later", "/c/l.json"), "not run: the batch was stopped")
    return [ok, failed, timeout, launcher, refused, stopped, skipped]


def _write(kind, path, results, interrupted_by=None, started=99.0, order=None):
    """The file as the batch writes it: each job's piece as the job ends (in `order`, the jobs'
    indexes as they end), then the whole."""
    outcome = Outcome(len(results), interrupted_by=interrupted_by)
    spooled = kind(str(path), len(results))
    for index in order or range(len(results)):
        outcome.count(results[index])
        spooled.finished(index, results[index])
    spooled.write(outcome, started)
    return outcome


def test_the_report_has_one_record_per_job_with_what_happened(tmp_path):
    path = tmp_path / "out" / "report.json"
    path.parent.mkdir()  # the command checks it exists before the batch; writing makes no directory
    _write(Report, path, _results(), interrupted_by=2, order=[6, 0, 2, 1, 5, 3, 4])  # in the jobs' order, whatever order they end in
    doc = json.loads(path.read_text())
    assert doc["exit_code"] == 130 and doc["interrupted_by"] == 2
    assert doc["counts"] == {PASSED: 1, FAILED: 4, INTERRUPTED: 1, NOT_RUN: 1}
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert list(jobs) == ["ok", "bad exit", "slow", "broken", "config", "stopped", "later"]
    ok = jobs["ok"]
    assert (ok["config"], ok["status"], ok["exit_code"], ok["duration_seconds"]) == ("/c/ok.json", PASSED, 0, 0.25)
    assert ok["timings"]["run"] == 0.2 and ok["limits_applied"] == {"max_ram_mb": "67108864 bytes"}
    assert ok["limits_not_enforced"] == {"max_storage_iops": "no block device"}
    assert ok["memory_reserved_bytes"] == 64 * MIB and ok["pinned_cpus"] == [1] and ok["peak_memory_bytes"] == 1 << 20
    assert jobs["broken"]["errors"] == ["setting up failed", "not released: cgroup /x: busy"] and jobs["broken"]["attempts"] == 3
    # A job that ran lists the lines `nspawn run` prints: the timeout, not the signal that carried it out.
    assert jobs["slow"]["timed_out"] is True and jobs["slow"]["errors"] == ["the timeout expired; the container was stopped"]
    assert jobs["stopped"]["errors"] == ["stopped by signal 2; everything made was rolled back"] and jobs["ok"]["errors"] == []
    assert jobs["config"]["errors"] == ["/c/c.json:1:2: $.x: unknown key"] and jobs["config"]["started"] is None
    assert jobs["later"]["status"] == NOT_RUN and jobs["later"]["exit_code"] is None


def test_the_junit_file_is_valid_and_says_what_happened_job_by_job(tmp_path):
    path = tmp_path / "junit.xml"
    _write(JUnit, path, _results(), order=[4, 3, 2, 1, 0, 6, 5])
    text = path.read_text()
    assert violations(text) == []
    suite = ET.fromstring(text).find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("7", "2", "3", "1")
    assert [child.tag for child in cases["ok"]] == ["system-out"] and cases["ok"].find("system-out").text == "hello"
    assert cases["ok"].get("time") == "0.250"
    assert cases["bad exit"].find("failure").get("type") == "exit 3"
    out = cases["bad exit"].find("system-out").text.splitlines()
    assert out[-1] == "line 499" and len(out) == 200  # the log's tail
    assert cases["bad exit"].find("system-err").text == "oops \ufffd\ufffd[31m\ufffd done"  # no bytes XML cannot hold
    assert cases["slow"].find("failure").get("message") == "the timeout expired; the container was stopped"
    assert cases["broken"].find("error").get("type") == "exit 125"
    assert cases["config"].find("error").get("message") == "/c/c.json:1:2: $.x: unknown key"
    assert cases["stopped"].find("error").get("type") == "interrupted"
    assert cases["later"].find("skipped") is not None


def _whole_report(outcome, started, ended, results):
    """The report as json.dumps of the whole document writes it: what the spooled one must be."""
    from nspawn.batch.report import VERSION, record

    return json.dumps({"version": VERSION, "started": started, "ended": ended, "exit_code": outcome.exit_code,
                       "interrupted_by": outcome.interrupted_by, "counts": outcome.counts,
                       "jobs": [record(r) for r in results]}, indent=2, ensure_ascii=False) + "\n"


def _whole_junit(text, results):
    """The JUnit file as ET.indent and ET.tostring of the whole tree write it, its times and
    counts taken from `text` (a time is the clock's): what the spooled one must be."""
    from nspawn.batch.junit import _case

    written = ET.fromstring(text.split("\n", 1)[1])
    root = ET.Element("testsuites", written.attrib)
    suite = ET.SubElement(root, "testsuite", written.find("testsuite").attrib)
    suite.extend(_case(r) for r in results)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


@pytest.mark.parametrize("count", [0, 1, 7, 300])
def test_the_spooled_files_are_byte_for_byte_the_whole_documents(tmp_path, count):
    """Written piece by piece as jobs end, out of order, the report and the JUnit file are
    exactly what encoding each whole document at the end wrote (and still valid)."""
    results = [(_results() + [JobResult("ünï \u2603", "/c/\U0001f600.json", PASSED, 0, started=1.0, ended=2.0)])[i % 8]
               for i in range(count)]
    for i, r in enumerate(results):
        r.name = f"{r.name} {i}"
    order = sorted(range(count), key=lambda i: (i * 7919) % (count or 1))  # a shuffle, the same each run
    report, junit = tmp_path / "r.json", tmp_path / "j.xml"
    outcome = _write(Report, report, results, interrupted_by=2 if count else None, order=order)
    _write(JUnit, junit, results, order=order)
    text = report.read_text(encoding="utf-8")
    assert text == _whole_report(outcome, 99.0, json.loads(text)["ended"], results)
    assert [j["name"] for j in json.loads(text)["jobs"]] == [r.name for r in results]
    text = junit.read_text(encoding="utf-8")
    assert text == _whole_junit(text, results)
    assert violations(text) == []
    assert sorted(os.listdir(tmp_path)) == ["j.xml", "r.json"]  # the spools were unnamed files


@pytest.mark.parametrize("broken, complaint", [
    ('<testsuite name="x" tests="1"/>', "the root is <testsuite>"),
    ('<testsuites><testsuite tests="0"/></testsuites>', "missing attribute name"),
    ('<testsuites><testsuite name="x" tests="1"><testcase name="a" time="1,5"/></testsuite></testsuites>', "time='1,5'"),
    ('<testsuites><testsuite name="x" tests="2"><testcase name="a"/></testsuite></testsuites>', "tests=2 but 1"),
    ('<testsuites><testsuite name="x" tests="1"><testcase name="a"><system-out/><failure/></testcase></testsuite></testsuites>', "out of order"),
    ('<testsuites><testsuite name="x" tests="1"><testcase name="a" result="ok"/></testsuite></testsuites>', "result is not allowed"),
    ('<testsuites><testsuite name="x" tests="1"><testcase name="a"><skipped/><skipped/></testcase></testsuite></testsuites>', "more than 1"),
    ('<testsuites><testsuite name="x" tests="0"><case/></testsuite></testsuites>', "<case> is not allowed"),
    ('<testsuites><testsuite name="x"', "not well-formed"),
])
def test_the_junit_check_rejects_what_the_schema_rejects(broken, complaint):
    assert any(complaint in v for v in violations(broken))


def test_the_budget_refusal_names_where_the_budget_came_from():
    given = Admission(memory_budget=100 * MIB, budget_from="--memory-budget gives the batch")
    assert "exceeds the 100 MiB --memory-budget gives the batch" in given.never_fits(Demand(200 * MIB))
    assert "this host has available" in Admission(memory_budget=100 * MIB).never_fits(Demand(200 * MIB))


def test_the_budget_refusal_of_the_command_names_the_option(tmp_path):
    from tests.conftest import nspawn

    config = tmp_path / "big.json"
    config.write_text(json.dumps({"process_executable": "/bin/true", "max_ram_mb": 512}))
    ran = nspawn("batch", str(config), "--memory-budget", "100M", "--report", str(tmp_path / "r.json"))
    assert ran.returncode == 1
    [job] = json.loads((tmp_path / "r.json").read_text())["jobs"]
    assert "--memory-budget" in job["errors"][0] and "this host" not in job["errors"][0]


def test_reports_are_not_written_into_directories_made_for_them(tmp_path):
    from nspawn.batch.report import check_writable

    assert check_writable(str(tmp_path / "r.json")) is None and os.listdir(tmp_path) == []
    assert "does not exist" in check_writable(str(tmp_path / "a" / "r.json"))
    with pytest.raises(OSError):
        _write(Report, tmp_path / "a" / "r.json", [])
    assert not (tmp_path / "a").exists()


def test_retries_only_what_a_retry_can_cure(tmp_path, monkeypatch):
    import errno

    import nspawn
    from nspawn.batch import run_job as job_module
    from nspawn.result import Result
    from nspawn.session import Stop

    config = tmp_path / "job.json"
    config.write_text(json.dumps({"process_executable": "/bin/true"}))
    for code, error, attempts in ((125, f"setting up the container failed: {os.strerror(errno.EBUSY)}", 3),
                                  (125, f"mount /x: {os.strerror(errno.EAGAIN)}", 3),
                                  (125, f"setting up the container failed: {os.strerror(errno.EPERM)}", 1),
                                  (125, "/srv/data: No such file or directory", 1),
                                  (125, "internal error: TypeError: x", 1),
                                  (1, None, 1), (127, "not found", 1), (0, None, 1)):
        calls = []

        def run(config, **how):
            calls.append(config)
            result = Result("c", "linux", exit_code=code)
            result.error = error
            return result

        monkeypatch.setattr(nspawn, "run", run)
        result = job_module.run_job(Job("j", str(config), retries=2), Stop())
        assert (result.attempts, len(calls), result.exit_code) == (attempts, attempts, code), error
    assert job_module.retriable(125, os.strerror(errno.EBUSY), stopped=True) is False  # a stop is never retried


def test_the_live_display_lists_every_job_of_a_small_batch_and_only_the_others_of_a_large_one():
    import io

    from rich.console import Console

    from nspawn.batch.display import TABLE_ALL, LiveDisplay

    for total in (TABLE_ALL, TABLE_ALL * 10):
        console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
        live, outcome = LiveDisplay(total, console), Outcome(total)
        for index in reversed(range(total)):
            result = JobResult(f"job{index:04}", "/c.json", FAILED if index in (3, 7) else PASSED, 3 if index in (3, 7) else 0,
                               error="exit 3" if index in (3, 7) else None)
            live.finished(index, result)
            outcome.count(result)
        listed = len(live.rows)
        live.close(outcome, 1.0)
        text = console.file.getvalue()
        listed_names = [line.split()[1] for line in text.splitlines() if line.startswith("│ job")]
        if total == TABLE_ALL:
            assert listed == total and listed_names == [f"job{i:04}" for i in range(total)]  # in the jobs' order
        else:
            assert listed == 2 and listed_names == ["job0003", "job0007"]
            assert f"{total - 2} passed jobs not listed" in text


def test_the_live_display_of_a_large_batch_that_passed_ends_with_its_summary_alone():
    import io

    from rich.console import Console

    from nspawn.batch.display import TABLE_ALL, LiveDisplay

    total = TABLE_ALL + 1
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    live, outcome = LiveDisplay(total, console), Outcome(total)
    for index in range(total):
        result = JobResult(f"job{index:04}", "/c.json", PASSED, 0)
        live.finished(index, result)
        outcome.count(result)
    live.close(outcome, 1.0)
    assert live.rows == [] and "job0000" not in console.file.getvalue()
    assert console.file.getvalue().rstrip().endswith(f"{total} jobs in 1.0 s: {total} passed")


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "named and unlinked"])
def test_report_pieces_wait_in_a_file_no_name_reaches(tmp_path, monkeypatch, tmpfile):
    """Where the file system lacks O_TMPFILE the spool is named, then unlinked at once: either
    way nothing but the report appears beside it, and only when it is written."""
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    elif not hasattr(os, "O_TMPFILE"):
        pytest.skip("O_TMPFILE is Linux's")
    results = _results()
    outcome, report = Outcome(len(results)), Report(str(tmp_path / "r.json"), len(results))
    for index, result in enumerate(results):
        report.finished(index, result)
        outcome.count(result)
    assert os.listdir(tmp_path) == []
    report.write(outcome, 0.0)
    assert os.listdir(tmp_path) == ["r.json"] and len(json.loads((tmp_path / "r.json").read_text())["jobs"]) == len(results)
