"""`nspawn batch --cluster` against a real cluster (conftest.py): two `nspawn worker`s in network
namespaces of their own, a TLS scheduler. What the report and JUnit file say matches what each
job did, no CPU is given to two running jobs on a worker, a worker killed mid-job has its job
run again elsewhere and cleans up when it starts again, Ctrl-C leaves nothing on either worker."""

from __future__ import annotations

import json
import re
import signal
import time
import xml.etree.ElementTree as ET

from nspawn.units import MIB
from tests.batch.junit_schema import violations
from tests.linux.conftest import needs_root

pytestmark = needs_root

# What each job prints first: the CPUs it may run on, as the kernel says (its own affinity).
CPUS_LINE = "grep Cpus_allowed_list /proc/self/status; "


def _sh(script: str, **more) -> dict:
    return {"process_executable": "/bin/sh", "process_arguments": ["-c", CPUS_LINE + script], **more}


def _write(directory, name: str, config: dict | str) -> None:
    (directory / f"{name}.json").write_text(config if isinstance(config, str) else json.dumps(config))


def _cpus(listing: str) -> set[int]:
    found = set()
    for part in listing.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def _first_busy(cluster, batch) -> tuple:
    """(the first worker found running a job of the batch, the other one)."""
    deadline = time.monotonic() + 60
    while True:
        for worker in cluster.workers:
            if worker.journals():
                return worker, next(w for w in cluster.workers if w is not worker)
        assert time.monotonic() < deadline and batch.poll() is None, "no job started"
        time.sleep(0.05)


def _ids(report: dict) -> list[str]:
    return [j["container_id"] for j in report["jobs"] if j["container_id"]]


def test_a_mixed_batch_reports_job_by_job_on_both_workers(cluster, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    expected = {}  # name: (status, exit code)
    for i in range(10):
        more = {"max_ram_mb": 64} if i % 3 == 0 else {"cpu_affinity_hex": "0x2"} if i % 3 == 1 else {"cpus_count": 1}
        _write(configs, f"ok{i}", _sh(f"echo ok {i}; sleep 0.5", **more))
        expected[f"ok{i}"] = ("passed", 0)
    # No memory limit: its peak is sampled on the worker while it runs (100 MiB touched for 3 s).
    _write(configs, "ok2", _sh("echo ok 2; exec /usr/bin/python3 -c 'import time; b = bytearray(100 * 2**20); time.sleep(3)'",
                               cpus_count=1))
    for i in range(1, 6):
        _write(configs, f"exit{i}", _sh(f"echo failing {i} >&2; exit {i}"))
        expected[f"exit{i}"] = ("failed", i)
    _write(configs, "timeout", _sh("sleep 30", stop_grace_seconds=0.5))  # the batch's --timeout applies
    expected["timeout"] = ("failed", 124)
    _write(configs, "oom", {"process_executable": "/usr/bin/python3", "max_ram_mb": 32, "timeout_seconds": 60,
                            "process_arguments": ["-c", "b = bytearray(200 * 2**20); print('survived')"]})
    expected["oom"] = ("failed", 137)
    _write(configs, "bad-config", '{"process_executable": "/bin/true", "netwrk": "none"}')
    expected["bad-config"] = ("failed", 2)
    # A host path the worker lacks: a job's error, said with the worker's host, not the batch's.
    _write(configs, "missing-path", _sh("true", process_directory="/nonexistent-on-the-worker", mapped_directory="/work"))
    expected["missing-path"] = ("failed", 2)
    _write(configs, "too-big", _sh("true", max_ram_mb=1024))  # the workers offer 512 MiB each
    expected["too-big"] = ("failed", 2)
    assert len(expected) == 20
    report_path, junit_path, logs = tmp_path / "report.json", tmp_path / "junit.xml", tmp_path / "logs"
    batch = cluster.batch(str(configs), "--report", str(report_path), "--junit", str(junit_path), "--logs", str(logs),
                          "--timeout", "5")
    out, err = batch.communicate(timeout=180)
    assert batch.returncode == 1, err
    report = json.loads(report_path.read_text())
    jobs = {j["name"]: j for j in report["jobs"]}
    assert sorted(jobs) == sorted(expected)
    for name, (status, code) in expected.items():
        assert (jobs[name]["status"], jobs[name]["exit_code"]) == (status, code), (name, jobs[name])
    for i in range(10):
        assert (logs / f"ok{i}.stdout").read_text().endswith(f"ok {i}\n")
    assert (logs / "exit3.stderr").read_text() == "failing 3\n"
    assert jobs["timeout"]["timed_out"] and jobs["oom"]["oom_killed"]
    assert jobs["ok2"]["peak_memory_bytes"] >= 100 * MIB, jobs["ok2"]
    assert "netwrk" in jobs["bad-config"]["errors"][0] and jobs["bad-config"]["worker"] is None
    assert "/nonexistent-on-the-worker" in jobs["missing-path"]["errors"][0]
    assert jobs["missing-path"]["errors"][0].startswith(f"on {jobs['missing-path']['host']}: ")
    assert "no worker of the cluster can hold it" in jobs["too-big"]["errors"][0] and jobs["too-big"]["worker"] is None
    assert report["counts"] == {"passed": 10, "failed": 10, "interrupted": 0, "not run": 0}
    ran = [j for j in report["jobs"] if j["worker"]]
    assert {j["worker"].rsplit(":", 1)[0] for j in ran} == {f"tls://{w.ip}" for w in cluster.workers}, "jobs on both workers"
    assert all(j["lost_runs"] == 0 for j in report["jobs"])

    junit = junit_path.read_text()
    assert violations(junit) == []
    cases = {c.get("name"): c for c in ET.fromstring(junit).iter("testcase")}
    for name, (status, code) in expected.items():
        verdicts = [child.tag for child in cases[name] if child.tag in ("failure", "error", "skipped")]
        refused = name in ("bad-config", "too-big", "missing-path")
        assert verdicts == ([] if code == 0 else ["error"] if refused else ["failure"]), name

    # No CPU held by two running jobs of one worker: from the CPUs each job's payload had.
    had = {}
    for name, job in jobs.items():
        log = logs / f"{name}.stdout"
        if job["worker"] and log.exists() and "Cpus_allowed_list" in log.read_text():
            had[name] = _cpus(re.search(r"Cpus_allowed_list:\s*(\S+)", log.read_text()).group(1))
            assert had[name] == set(job["pinned_cpus"]), name
    assert had["ok1"] == {1}  # a job's own affinity is kept
    assert len(had) >= 15
    overlapping = 0
    for a in had:
        for b in had:
            ja, jb = jobs[a], jobs[b]
            if a < b and ja["worker"] == jb["worker"] and ja["started"] < jb["ended"] and jb["started"] < ja["ended"]:
                assert not had[a] & had[b], (a, b, ja["worker"])
                overlapping += 1
    assert overlapping, "no two jobs ran at once on a worker: the check above proved nothing"
    for worker in cluster.workers:
        assert worker.leftovers(_ids(report)) == []


def test_a_worker_killed_mid_job_has_its_job_run_elsewhere_and_cleans_up_when_it_starts_again(cluster, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    for i in range(2):  # two CPUs each, one job per worker: none waits behind another
        _write(configs, f"slow{i}", _sh(f"echo slow {i}; sleep 3", cpus_count=2))
    report_path = tmp_path / "report.json"
    batch = cluster.batch(str(configs), "--report", str(report_path))
    victim, survivor = _first_busy(cluster, batch)
    lost = [j.rsplit("/", 1)[1].removesuffix(".journal") for j in victim.journals()]
    time.sleep(0.5)  # well into the run: its container made
    victim.kill()
    out, err = batch.communicate(timeout=120)
    assert batch.returncode == 0, err
    report = json.loads(report_path.read_text())
    assert [j["status"] for j in report["jobs"]] == ["passed", "passed"]
    rerun = [j for j in report["jobs"] if j["lost_runs"]]
    assert len(rerun) == 1 and rerun[0]["lost_runs"] == 1 and rerun[0]["worker"].startswith(survivor.address_prefix)
    assert victim.leftovers(lost)  # the kill left its container's journal behind
    victim.start()  # cleans its state directory before it takes work
    assert "released" in victim.output.text
    assert victim.leftovers(lost + _ids(report)) == []
    assert survivor.leftovers(_ids(report)) == []


def test_ctrl_c_half_way_leaves_nothing_on_either_worker(cluster, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    for i in range(2):
        _write(configs, f"a-quick{i}", _sh(f"echo quick {i}"))
    for i in range(8):
        _write(configs, f"b-slow{i}", _sh("sleep 30", stop_grace_seconds=1))
    report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"
    batch = cluster.batch(str(configs), "--report", str(report_path), "--junit", str(junit_path))
    deadline = time.monotonic() + 60
    # Both workers running slow jobs, the batch's four slots taken (Dask may place three on
    # one worker, whose third then waits there for a CPU: it never starts).
    while not (all(w.journals("b-slow") for w in cluster.workers) and sum(len(w.journals("b-slow")) for w in cluster.workers) >= 3):
        assert time.monotonic() < deadline and batch.poll() is None, "the workers were not both busy"
        time.sleep(0.05)
    time.sleep(0.5)
    running = sum(len(w.journals("b-slow")) for w in cluster.workers)
    batch.send_signal(signal.SIGINT)
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 128 + signal.SIGINT, err
    report = json.loads(report_path.read_text())
    statuses = {j["name"]: j["status"] for j in report["jobs"]}
    assert [statuses[f"a-quick{i}"] for i in range(2)] == ["passed"] * 2
    slow = [statuses[f"b-slow{i}"] for i in range(8)]
    assert slow.count("interrupted") == running and slow.count("not run") == 8 - running, slow
    stopped = [j for j in report["jobs"] if j["status"] == "interrupted"]
    assert all(j["interrupted_by"] == signal.SIGINT and j["rolled_back"] for j in stopped)
    assert violations(junit_path.read_text()) == []
    for worker in cluster.workers:
        assert worker.leftovers(_ids(report)) == []
    # The batch's stop event and signal were cleared off the scheduler.
    left = cluster.on_scheduler("lambda dask_scheduler: [str(name) for name in [*dask_scheduler.extensions['events']._events, "
                                "*dask_scheduler.extensions['variables'].variables] if 'nspawn' in str(name)]")
    assert left == []


def test_fail_fast_stops_the_jobs_on_the_workers_and_starts_no_more(cluster, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    _write(configs, "a-fails", _sh("sleep 1; exit 1"))
    for i in range(7):
        _write(configs, f"b-slow{i}", _sh("sleep 30", stop_grace_seconds=1))
    report_path = tmp_path / "report.json"
    batch = cluster.batch(str(configs), "--report", str(report_path), "--fail-fast")
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 1, err
    report = json.loads(report_path.read_text())
    statuses = [j["status"] for j in report["jobs"]]
    # Four slots: three slow jobs were sent with the failing one (one may still wait for a CPU
    # on its worker, and then never starts); none passes, the last four are never sent.
    assert statuses[0] == "failed" and "passed" not in statuses and statuses[1:].count("interrupted") >= 2, statuses
    assert statuses[4:] == ["not run"] * 4, statuses
    assert all(j["interrupted_by"] == signal.SIGTERM for j in report["jobs"] if j["status"] == "interrupted")
    for worker in cluster.workers:
        assert worker.leftovers(_ids(report)) == []


def test_a_client_whose_certificate_the_cluster_did_not_sign_is_refused(cluster, tmp_path):
    from tests.cluster.conftest import self_signed

    configs = tmp_path / "configs"
    configs.mkdir()
    _write(configs, "never", _sh("echo ran"))
    rogue = self_signed(str(tmp_path), cluster.certificates["client"]["ca"])
    batch = cluster.batch(str(configs), certificates=rogue, env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"})
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 125 and "cannot reach the scheduler" in err, err
    assert all(not w.journals() for w in cluster.workers)


def test_a_worker_stopped_with_sigterm_stops_its_job_and_hands_back_the_rest(cluster, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    for i in range(4):  # all pinned to CPU 1: a second job sent to a worker waits for the first there
        _write(configs, f"pinned{i}", _sh("sleep 2", cpu_affinity_hex="0x2", stop_grace_seconds=1))
    report_path = tmp_path / "report.json"
    batch = cluster.batch(str(configs), "--report", str(report_path))
    victim, survivor = _first_busy(cluster, batch)
    victim.stop()
    assert victim.process.returncode == 128 + signal.SIGTERM, victim.output.text
    out, err = batch.communicate(timeout=120)
    report = json.loads(report_path.read_text())
    jobs = report["jobs"]
    assert sorted(j["status"] for j in jobs) == ["interrupted", "passed", "passed", "passed"], err
    stopped = next(j for j in jobs if j["status"] == "interrupted")
    assert stopped["worker"].startswith(victim.address_prefix) and stopped["interrupted_by"] == signal.SIGTERM
    assert all(j["worker"].startswith(survivor.address_prefix) for j in jobs if j["status"] == "passed")
    assert victim.leftovers(_ids(report)) == [] and survivor.leftovers(_ids(report)) == []
    victim.start()
