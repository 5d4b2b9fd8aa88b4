"""`nspawn batch` with real containers, as root: what the report and the JUnit file say matches
what each job did, admission holds, Ctrl-C half-way leaves nothing behind, and runs on worker
threads do not hold each other's descriptors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from nspawn.backends.linux.forkserver import ForkServer
from nspawn.units import MIB
from nspawn.config.resolve import load_config
from nspawn.launch import run as launch_run
from nspawn.session import Stop
from tests.batch.junit_schema import violations
from tests.linux.conftest import _scratch, ROOT, container_processes, leftovers, needs_root  # noqa: F401 (_scratch: the fixture)

pytestmark = needs_root

BUDGET_MIB = 200


def _sh(script: str, **more) -> dict:
    return {"process_executable": "/bin/sh", "process_arguments": ["-c", script], **more}


def _write(directory, name: str, config: dict | str) -> None:
    (directory / f"{name}.json").write_text(config if isinstance(config, str) else json.dumps(config))


def _batch(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "nspawn", "batch", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _container_ids(report: dict) -> list[str]:
    return [j["container_id"] for j in report["jobs"] if j["container_id"]]


@pytest.fixture
def fifty(tmp_path):
    """50 configs and what each should end as: (status, exit code, text in its stdout log)."""
    configs = tmp_path / "configs"
    configs.mkdir()
    expected = {}
    for i in range(30):
        more = {"max_ram_mb": 64} if i % 3 == 0 else {"cpu_affinity_hex": "0x1"} if i % 5 == 1 else {}
        _write(configs, f"ok{i:02}", _sh(f"echo ok {i}", **more))
        expected[f"ok{i:02}"] = ("passed", 0, f"ok {i}\n")
    for i in range(1, 16):
        _write(configs, f"exit{i:02}", _sh(f"echo failing {i}; echo to stderr >&2; exit {i}", max_ram_mb=64))
        expected[f"exit{i:02}"] = ("failed", i, f"failing {i}\n")
    _write(configs, "timeout-own", _sh("echo before; sleep 30", timeout_seconds=0.3, stop_grace_seconds=0.5))
    expected["timeout-own"] = ("failed", 124, "before\n")
    _write(configs, "timeout-batch", _sh("sleep 30", stop_grace_seconds=0.5))  # the batch's --timeout applies
    expected["timeout-batch"] = ("failed", 124, "")
    # Debian's python3: the test's own interpreter may live under /tmp, which the container does not see.
    # Its own timeout, not the batch's 1 s: Python's start alone takes longer on a slow host
    # (the cgroup v2 VM emulates its CPU).
    _write(configs, "oom", {"process_executable": "/usr/bin/python3", "max_ram_mb": 32, "timeout_seconds": 60,
                            "process_arguments": ["-c", "b = bytearray(200 * 2**20); print('survived')"]})
    expected["oom"] = ("failed", 137, "")
    _write(configs, "bad-config", '{"process_executable": "/bin/true", "netwrk": "none"}')
    expected["bad-config"] = ("failed", 2, None)
    _write(configs, "too-big", _sh("true", max_ram_mb=BUDGET_MIB * 2))
    expected["too-big"] = ("failed", 2, None)
    assert len(expected) == 50
    return configs, expected


def test_fifty_jobs_report_what_happened_job_by_job_and_leave_nothing(fifty, tmp_path, _scratch):
    configs, expected = fifty
    report_path, junit_path, logs = tmp_path / "report.json", tmp_path / "junit.xml", tmp_path / "logs"
    batch = _batch(str(configs), "-j", "4", "--logs", str(logs), "--report", str(report_path), "--junit", str(junit_path),
                   "--timeout", "1", "--memory-budget", f"{BUDGET_MIB}M")
    out, err = batch.communicate(timeout=120)
    assert batch.returncode == 1, err
    report = json.loads(report_path.read_text())
    jobs = {j["name"]: j for j in report["jobs"]}
    assert sorted(jobs) == sorted(expected)
    for name, (status, code, stdout) in expected.items():
        job = jobs[name]
        assert (job["status"], job["exit_code"]) == (status, code), (name, job)
        if stdout is not None:
            assert (logs / f"{name}.stdout").read_text() == stdout, name
            assert job["rolled_back"], name  # it ran, and what it made was released
        if status == "passed" or name.startswith("exit"):
            assert job["errors"] == [], name
    assert (logs / "exit03.stderr").read_text() == "to stderr\n"
    assert jobs["timeout-own"]["timed_out"] and jobs["timeout-batch"]["timed_out"]
    assert jobs["oom"]["oom_killed"] and any("memory limit" in e for e in jobs["oom"]["errors"])
    assert jobs["ok00"]["limits_applied"]["max_ram_mb"].startswith(str(64 * MIB))
    assert "netwrk" in jobs["bad-config"]["errors"][0] and "can never start" in jobs["too-big"]["errors"][0]
    assert report["counts"] == {"passed": 30, "failed": 20, "interrupted": 0, "not run": 0}

    junit = junit_path.read_text()
    assert violations(junit) == []
    cases = {c.get("name"): c for c in ET.fromstring(junit).iter("testcase")}
    assert sorted(cases) == sorted(expected)
    for name, (status, code, stdout) in expected.items():
        case = cases[name]
        verdicts = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        assert verdicts == ([] if code == 0 else ["error"] if name in ("bad-config", "too-big") else ["failure"]), name
        if stdout:
            assert case.find("system-out").text == stdout.rstrip("\n")

    _assert_admission_held(report["jobs"])
    assert leftovers(str(_scratch), _container_ids(report)) == []


def _assert_admission_held(jobs: list[dict]) -> None:
    """At every job's start, the running jobs' memory limits fit the budget and no CPU is pinned twice."""
    ran = [j for j in jobs if j["started"] is not None]
    for job in ran:
        at = job["started"]
        running = [j for j in ran if j["started"] <= at < j["ended"]]
        assert sum(j["memory_reserved_bytes"] for j in running) <= BUDGET_MIB * MIB, [j["name"] for j in running]
        pinned = [cpu for j in running for cpu in j["pinned_cpus"]]
        assert len(pinned) == len(set(pinned)), [j["name"] for j in running]
    assert max(sum(1 for j in ran if j["started"] <= k["started"] < j["ended"]) for k in ran) > 1  # it did run jobs at once


def test_ctrl_c_half_way_stops_the_running_jobs_and_still_writes_the_reports(tmp_path, _scratch):
    configs = tmp_path / "configs"
    configs.mkdir()
    for i in range(4):
        _write(configs, f"a-quick{i}", _sh(f"echo quick {i}"))
    for i in range(6):
        _write(configs, f"b-slow{i}", _sh("echo started; sleep 30", stop_grace_seconds=1))
    report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"
    batch = _batch(str(configs), "-j", "2", "--report", str(report_path), "--junit", str(junit_path))
    seen = []
    for line in batch.stderr:  # plain lines: the batch's stderr is not a terminal
        seen.append(line)
        if sum("start       b-slow" in s for s in seen) == 2:
            break
    batch.send_signal(signal.SIGINT)
    out, err = batch.communicate(timeout=30)
    assert batch.returncode == 128 + signal.SIGINT, "".join(seen) + err
    report = json.loads(report_path.read_text())
    statuses = {j["name"]: j["status"] for j in report["jobs"]}
    assert [statuses[f"a-quick{i}"] for i in range(4)] == ["passed"] * 4
    assert [statuses[f"b-slow{i}"] for i in range(2)] == ["interrupted"] * 2
    assert [statuses[f"b-slow{i}"] for i in range(2, 6)] == ["not run"] * 4
    assert report["interrupted_by"] == signal.SIGINT
    junit = junit_path.read_text()
    assert violations(junit) == []
    assert sum(c.find("skipped") is not None for c in ET.fromstring(junit).iter("testcase")) == 4
    assert leftovers(str(_scratch), _container_ids(report)) == []


def _open_files(pid: int) -> set[str]:
    """What `pid` holds open; a descriptor that closes while we look (the payload closes all but
    its own before exec) is not held."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return held


@pytest.mark.parametrize("forked_by", ["the launcher", "the fork server"])
def test_runs_on_worker_threads_hold_only_their_own_descriptors(_scratch, forked_by):
    """A container forked on one thread, or by the fork server a batch uses, must not keep
    another run's pipes open (its launcher would wait for their end of file until this
    container ended)."""
    server = ForkServer() if forked_by == "the fork server" else None
    config = load_config(None, _sh("sleep 30"), host=True)
    stop, pids, results = Stop(), [], []
    ready = threading.Event()

    def listener(event, details):
        if event == "process":
            pids.append(details["pid"])
            ready.set()

    read_end, write_end = os.pipe()  # as another run's pipe would be, when this one forks
    try:
        worker = threading.Thread(target=lambda: results.append(launch_run(config, listener=listener, stop=stop)))
        worker.start()
        assert ready.wait(10)
        ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in (read_end, write_end)}
        with open(f"/proc/{pids[0]}/stat") as f:
            first = int(f.read().rsplit(")", 1)[1].split()[1])  # A, the init's parent
        theirs = set()
        for pid in [first, pids[0], *map(int, open(f"/proc/{pids[0]}/task/{pids[0]}/children").read().split())]:
            theirs |= _open_files(pid)
        assert ours and not ours & theirs
    finally:
        os.close(read_end)
        os.close(write_end)
        stop.ask(signal.SIGTERM)  # from this thread: it must not raise here, and must stop the run there
        worker.join(20)
        if server is not None:
            server.close()
    assert results[0].interrupted_by == signal.SIGTERM and results[0].exit_code == 128 + signal.SIGTERM
    assert container_processes(str(_scratch)) == []


def test_jobs_asking_for_one_cpu_each_get_different_ones(tmp_path, _scratch):
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("a", "b"):
        _write(configs, name, _sh("grep Cpus_allowed_list /proc/self/status; sleep 0.5", cpus_count=1))
    batch = _batch(str(configs), "-j", "2", "--logs", str(tmp_path / "logs"), "--report", str(tmp_path / "r.json"))
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 0, out + err
    first, second = sorted(os.sched_getaffinity(0))[:2]  # the CPUs this runner may give
    seen = {(tmp_path / "logs" / f"{n}.stdout").read_text().split()[-1] for n in ("a", "b")}
    report = json.loads((tmp_path / "r.json").read_text())
    jobs = report["jobs"]
    assert seen == {str(first), str(second)} and sorted(j["pinned_cpus"] for j in jobs) == [[first], [second]]
    a, b = jobs
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # they ran side by side
    assert leftovers(str(_scratch), _container_ids(report)) == []


def test_a_job_s_error_says_what_nspawn_run_says_on_stderr(tmp_path, _scratch):
    configs = tmp_path / "configs"
    configs.mkdir()
    _write(configs, "killed", _sh("kill -9 $$"))
    single = subprocess.run([sys.executable, "-m", "nspawn", "run", "-c", str(configs / "killed.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert (single.returncode, single.stderr) == (137, "warning: the container process was killed by signal 9\n")
    batch = _batch(str(configs), "--report", str(tmp_path / "r.json"))
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 1, out + err
    [job] = json.loads((tmp_path / "r.json").read_text())["jobs"]
    assert (job["exit_code"], job["errors"]) == (137, ["the container process was killed by signal 9"])
    assert leftovers(str(_scratch), _container_ids({"jobs": [job]})) == []


def _batch_on_a_terminal(args: list[str]):
    """`nspawn batch ARGS` with a pseudo-terminal as its controlling terminal and its stdin,
    stdout and stderr, as a user's shell runs it: (process, master fd, what it wrote so far)."""
    import fcntl
    import termios

    master, slave = os.openpty()

    def controlling_terminal():  # in the child, a session leader after start_new_session
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    child = subprocess.Popen([sys.executable, "-m", "nspawn", "batch", *args], cwd=ROOT, stdin=slave, stdout=slave,
                             stderr=slave, start_new_session=True, preexec_fn=controlling_terminal,
                             env={**os.environ, "TERM": "xterm", "COLUMNS": "120"})
    os.close(slave)
    seen = bytearray()

    def drain():  # the live display must never block on a full terminal
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            seen.extend(data)

    threading.Thread(target=drain, daemon=True).start()
    return child, master, seen


def test_ctrl_c_typed_on_a_terminal_marks_the_running_jobs_interrupted(tmp_path, _scratch):
    import time

    configs, shared = tmp_path / "configs", tmp_path / "shared"
    configs.mkdir()
    shared.mkdir()
    common = {"process_directory": str(shared), "stop_grace_seconds": 2}
    _write(configs, "a-dies", _sh("touch a-dies.started; sleep 30", **common))  # dies of SIGINT: 130
    _write(configs, "b-traps", _sh("trap 'exit 3' INT; touch b-traps.started; sleep 30 & wait", **common))
    _write(configs, "c-later", _sh("true"))
    report_path = tmp_path / "report.json"
    child, master, seen = _batch_on_a_terminal([str(configs), "-j", "2", "--report", str(report_path)])
    try:
        deadline = time.monotonic() + 30
        while not all((shared / f"{n}.started").exists() for n in ("a-dies", "b-traps")):
            assert time.monotonic() < deadline and child.poll() is None, seen.decode(errors="replace")
            time.sleep(0.05)
        time.sleep(0.3)  # the trap is set before the marker; let the shell reach its wait
        os.write(master, b"\x03")  # Ctrl-C, as typed: the line discipline signals the foreground group
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    assert child.returncode == 128 + signal.SIGINT, seen.decode(errors="replace")
    report = json.loads(report_path.read_text())
    jobs = {j["name"]: j for j in report["jobs"]}
    assert (jobs["a-dies"]["status"], jobs["b-traps"]["status"]) == ("interrupted", "interrupted"), jobs
    assert jobs["a-dies"]["interrupted_by"] == jobs["b-traps"]["interrupted_by"] == signal.SIGINT
    assert jobs["c-later"]["status"] == "not run"
    assert report["interrupted_by"] == signal.SIGINT and report["counts"]["interrupted"] == 2
    assert leftovers(str(_scratch), _container_ids(report)) == []


def test_output_paths_are_checked_before_the_first_job(tmp_path):
    configs, marker = tmp_path / "configs", tmp_path / "ran"
    configs.mkdir()
    _write(configs, "job", _sh(f"touch {marker}"))
    for args, said in ((["--report", "/proc/x.json"], "--report /proc/x.json: cannot write the file there"),
                       (["--junit", str(tmp_path / "no" / "such" / "j.xml")], "does not exist"),
                       (["--report", str(tmp_path)], "is a directory"),
                       (["--logs", str(tmp_path / "no" / "logs")], "its parent directory")):
        batch = _batch(str(configs), *args)
        out, err = batch.communicate(timeout=60)
        assert batch.returncode == 2 and said in err, (args, err)
        assert "start" not in err and not marker.exists(), args  # no job ran
    assert not (tmp_path / "no").exists()  # no parent directory was made


def test_the_logs_directory_itself_is_made_and_said_at_v(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    _write(configs, "job", _sh("echo hi"))
    batch = _batch(str(configs), "-v", "--logs", str(tmp_path / "logs"))
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 0, err
    assert f"made the logs directory {tmp_path / 'logs'}" in err
    assert (tmp_path / "logs" / "job.stdout").read_text() == "hi\n"


def test_a_job_s_log_and_its_stdout_file_get_every_byte_of_a_large_output(tmp_path):
    """A job's output goes to the batch's streams (its logs and tails), so it is copied, not
    moved by the kernel as a run's is (tests/linux/test_output_moved.py); more than every pipe
    on the way holds. The file takes stderr too, in whichever order the two pipes were read."""
    configs, work = tmp_path / "configs", tmp_path / "work"
    configs.mkdir()
    work.mkdir()
    _write(configs, "big", _sh("head -c 3000000 /dev/urandom > data; cat data; echo done >&2",
                               process_directory=str(work), stdout_filename="log.bin"))
    batch = _batch(str(configs), "--logs", str(tmp_path / "logs"))
    _, err = batch.communicate(timeout=60)
    assert batch.returncode == 0, err
    data = (work / "data").read_bytes()
    assert len(data) == 3000000 and (tmp_path / "logs" / "big.stdout").read_bytes() == data
    assert (tmp_path / "logs" / "big.stderr").read_bytes() == b"done\n"
    log = (work / "log.bin").read_bytes()
    assert len(log) == len(data) + 5 and log.replace(b"done\n", b"", 1) == data


def test_a_batch_holds_no_finished_job_s_result(tmp_path, _scratch):
    """Each job's result goes to the display and the reports as it ends and is then dropped:
    while the batch runs, no earlier job's result is alive (only those the loop is handing
    over at that moment), and the reports still have every job, in the jobs' order."""
    import gc
    import weakref

    from nspawn.batch.admission import Admission
    from nspawn.batch.display import PlainDisplay
    from nspawn.batch.executor import LocalExecutor
    from nspawn.batch.jobs import Job
    from nspawn.batch.junit import JUnit
    from nspawn.batch.report import Report
    from nspawn.batch.scheduler import Listener, run_batch

    count, slots = 30, 2
    for i in range(count):
        _write(tmp_path, f"j{i:02}", _sh(f"echo {i}; exit {int(i % 3 == 0)}"))
    jobs = [Job(f"j{i:02}", str(tmp_path / f"j{i:02}.json")) for i in range(count)]

    class Watch(Listener):
        def __init__(self):
            self.results, self.most_alive = [], 0

        def finished(self, index, result):
            gc.collect()
            self.most_alive = max(self.most_alive, sum(r() is not None for r in self.results))
            self.results.append(weakref.ref(result))

    watch = Watch()
    reports = [Report(str(tmp_path / "r.json"), count), JUnit(str(tmp_path / "j.xml"), count)]
    executor = LocalExecutor(slots)
    try:
        outcome = run_batch(jobs, {}, executor, Admission(None), slots, [PlainDisplay(count, open(os.devnull, "w")), *reports, watch])
    finally:
        executor.close()
    for spooled in reports:
        spooled.write(outcome, 0.0)
    gc.collect()
    assert len(watch.results) == count and watch.most_alive < slots  # the others of one hand-over at most
    assert not any(r() for r in watch.results)
    report = json.loads((tmp_path / "r.json").read_text())
    assert outcome.counts == {"passed": 20, "failed": 10, "interrupted": 0, "not run": 0} and outcome.exit_code == 1
    assert [(j["name"], j["exit_code"]) for j in report["jobs"]] == [(f"j{i:02}", int(i % 3 == 0)) for i in range(count)]
    junit = (tmp_path / "j.xml").read_text()
    assert violations(junit) == []
    cases = list(ET.fromstring(junit).iter("testcase"))
    assert [c.get("name") for c in cases] == [job.name for job in jobs]
    assert [c.find("system-out").text for c in cases] == [str(i) for i in range(count)]
    assert leftovers(str(_scratch), _container_ids(report)) == []


def test_a_killed_batch_leaves_no_spooled_report_behind(tmp_path, _scratch):
    """The report's pieces wait in unnamed files: a launcher killed outright leaves neither a
    half report nor a spool beside it (its containers are `nspawn cleanup`'s)."""
    configs, out = tmp_path / "configs", tmp_path / "out"
    configs.mkdir()
    out.mkdir()
    for i in range(4):
        _write(configs, f"a{i}", _sh(f"echo {i}"))
    _write(configs, "b-slow", _sh("echo started; sleep 30"))
    batch = _batch(str(configs), "-j", "1", "--report", str(out / "r.json"), "--junit", str(out / "j.xml"))
    for line in batch.stderr:
        if "start       b-slow" in line:
            break
    assert os.listdir(out) == []
    batch.kill()
    batch.communicate(timeout=30)
    assert os.listdir(out) == []
    subprocess.run([sys.executable, "-m", "nspawn", "cleanup"], cwd=ROOT, check=True, capture_output=True)
    assert leftovers(str(_scratch), []) == [] and container_processes(str(_scratch)) == []
