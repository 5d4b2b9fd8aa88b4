"""The cluster's rules without a cluster: which scheduler addresses are refused and why, the
certificates' options, what plain nspawn imports, the extra's install hint, a job's needs
against the workers' offers, and jobs and results as plain data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nspawn.batch.jobs import Demand, Job, JobResult, job_from_data, job_to_data, result_from_data, result_to_data
from nspawn.cluster.resources import CPUS, MEMORY, ClusterAdmission, needs
from nspawn.cluster.security import refusal, split, tls_from
from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError
from nspawn.units import MIB
from tests.linux.conftest import ROOT


def _nspawn(*args: str, code: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code + "import sys\nfrom nspawn.entry import main\nsys.argv = ['nspawn', *sys.argv[1:]]\nmain()",
                           *args], cwd=ROOT, capture_output=True, text=True)


def _certificates(tmp_path):
    for name in ("ca.pem", "me.pem", "me.key"):
        (tmp_path / name).write_text("PEM")
    return [str(tmp_path / name) for name in ("ca.pem", "me.pem", "me.key")]


@pytest.mark.parametrize("address, host", [("tcp://127.0.0.1:8786", "127.0.0.1"), ("127.0.0.2:1", "127.0.0.2"),
                                           ("tcp://[::1]:8786", "::1"), ("tls://sched.example:8786", "sched.example")])
def test_addresses_split_into_scheme_host_and_port(address, host):
    assert split(address)[1] == host and split(address)[2].isdigit()


def test_plain_tcp_only_on_loopback_and_tls_only_with_certificates(tmp_path):
    tls, problems = tls_from(*_certificates(tmp_path), None)
    assert problems == []
    for loopback in ("tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786", "127.0.0.1:8786"):
        assert refusal(loopback, None) is None
    for far in ("tcp://10.216.0.1:8786", "tcp://sched.example:8786", "10.216.0.1:8786", "tcp://[2001:db8::1]:8786"):
        assert "plain tcp:// is refused off loopback" in refusal(far, None), far
    assert "needs the cluster's certificates" in refusal("tls://10.216.0.1:8786", None)
    assert refusal("tls://10.216.0.1:8786", tls) is None
    assert "use tls://" in refusal("tcp://127.0.0.1:8786", tls)
    for odd in ("ws://127.0.0.1:8786", "tcp://127.0.0.1", "inproc://x"):
        assert "expected tls://HOST:PORT" in refusal(odd, None), odd


def test_a_security_file_names_the_files_relative_to_itself(tmp_path):
    _certificates(tmp_path)
    (tmp_path / "cluster.json").write_text(json.dumps({"ca": "ca.pem", "cert": "me.pem", "key": "me.key"}))
    tls, problems = tls_from(None, None, None, str(tmp_path / "cluster.json"))
    assert problems == [] and tls.ca == str(tmp_path / "ca.pem") and tls.key == str(tmp_path / "me.key")
    (tmp_path / "cluster.json").write_text(json.dumps({"ca": "ca.pem", "cert": "gone.pem", "key": "me.key"}))
    assert "gone.pem: no such file" in tls_from(None, None, None, str(tmp_path / "cluster.json"))[1][0]
    (tmp_path / "cluster.json").write_text("[]")
    assert "expected a JSON object" in tls_from(None, None, None, str(tmp_path / "cluster.json"))[1][0]
    assert "--tls-key is missing" in tls_from(*_certificates(tmp_path)[:2], None, None)[1][0]


def test_a_non_loopback_scheduler_without_tls_is_refused_before_any_connection(tmp_path):
    config = tmp_path / "job.json"
    config.write_text('{"process_executable": "/bin/true"}')
    for argv in (["batch", "--cluster", "tcp://10.216.0.1:8786", str(config)], ["worker", "tcp://10.216.0.1:8786"]):
        ran = _nspawn(*argv)
        assert ran.returncode == 2, ran.stderr
        assert "plain tcp:// is refused off loopback" in ran.stderr and "Traceback" not in ran.stderr
    ran = _nspawn("batch", "--tls-ca", "ca.pem", str(config))
    assert ran.returncode == 2 and "are for --cluster" in ran.stderr


def test_without_the_extra_a_cluster_option_says_how_to_install_it(tmp_path):
    config = tmp_path / "job.json"
    config.write_text('{"process_executable": "/bin/true"}')
    hide = "import sys\nsys.modules['distributed'] = None\n"  # as if it were not installed
    for argv in (["batch", "--cluster", "tcp://127.0.0.1:8786", str(config)], ["worker", "tcp://127.0.0.1:8786"]):
        ran = _nspawn(*argv, code=hide)
        assert ran.returncode == 2, ran.stderr
        assert "pip install 'nspawn[cluster]'" in ran.stderr and "Traceback" not in ran.stderr


def test_plain_nspawn_never_imports_distributed(tmp_path):
    config = tmp_path / "job.json"
    config.write_text('{"process_executable": "/bin/true"}')
    code = ("import sys\nfrom nspawn.cli import cli\n"
            "for argv in (['--help'], ['batch', '--help'], ['worker', '--help'], ['validate', sys.argv[1]],\n"
            "             ['batch', sys.argv[1] + '.missing'], ['run', '--dry-run', '-c', sys.argv[1]]):\n"
            "    try:\n        cli(argv, prog_name='nspawn')\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'dask', 'tornado')), file=sys.stderr)")
    ran = subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT, capture_output=True, text=True)
    assert ran.stderr.splitlines()[-1] == "[]", ran.stderr


def test_a_job_fits_a_worker_that_holds_it_alone_or_fails_at_once():
    workers = {"tls://a:1": {MEMORY: 512 * MIB, CPUS: 2}, "tls://b:1": {MEMORY: 256 * MIB, CPUS: 4},
               "tls://plain:1": {}}  # a plain Dask worker offers neither: never counted
    admitted = ClusterAdmission(workers)
    assert admitted.cpus == 6
    assert admitted.never_fits(Demand(512 * MIB, (), 2)) is None
    assert admitted.never_fits(Demand(0, (0, 1, 2), 0)) is None  # b has 4 CPUs
    assert admitted.never_fits(Demand(300 * MIB, (), 3)).startswith("no worker of the cluster can hold it (300 MiB, 3 CPUs")
    assert "can never start" in admitted.never_fits(Demand(1024 * MIB))
    assert ClusterAdmission({}).never_fits(Demand()) == "no nspawn worker is connected to the scheduler"
    assert needs(Demand()) == {MEMORY: 0, CPUS: 1}  # every job holds a CPU of its own
    assert needs(Demand(64 * MIB, (1, 3), 0)) == {MEMORY: 64 * MIB, CPUS: 2}


def _builtins_only(value) -> bool:
    if isinstance(value, dict):
        return all(type(k) is str and _builtins_only(v) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(map(_builtins_only, value))
    return value is None or type(value) in (str, int, float, bool, bytes)


def test_jobs_and_results_travel_as_builtins():
    job = Job("a", "/ci/a.json", 5, 1, None, Demand(MIB, (1,), 0), b'{"process_executable": "/bin/true"}')
    data = job_to_data(job)
    assert _builtins_only(data) and job_from_data(data) == job
    result = JobResult("a", "/ci/a.json", "passed", 0, run={"exit_code": 0}, demand=job.demand, host="h", worker="tls://x:1", lost_runs=1)
    data = result_to_data(result)
    assert _builtins_only(data) and vars(result_from_data(data)) == vars(result)


def test_a_config_sent_as_data_resolves_its_host_paths_where_it_runs(tmp_path):
    """The worker need not see the file: its bytes come with the job, its relative paths are
    relative to the file's directory, looked up on the worker's host."""
    data = json.dumps({"process_executable": "/bin/true", "process_directory": "work"}).encode()
    elsewhere = str(tmp_path / "client-only" / "job.json")  # no such file here
    config = load_config(elsewhere, data=data)
    assert config.process_directory == str(tmp_path / "client-only" / "work")
    with pytest.raises(ConfigError) as refused:
        load_config(elsewhere, data=data, host=True)
    assert "client-only/work" in refused.value.one_line()
    os.makedirs(tmp_path / "client-only" / "work")
    assert load_config(elsewhere, data=data, host=True).process_directory == str(tmp_path / "client-only" / "work")


def test_the_displays_say_where_each_job_ran():
    import io

    from rich.console import Console

    from nspawn.batch.display import LiveDisplay, PlainDisplay
    from nspawn.batch.scheduler import Outcome

    here = JobResult("local", "/ci/local.json", "passed", 0, started=1.0, ended=2.0)
    there = JobResult("remote", "/ci/remote.json", "failed", 3, started=1.0, ended=2.0, host="build-3", worker="tls://10.0.0.7:4000")
    stream = io.StringIO()
    plain = PlainDisplay(2, stream)
    plain.finished(0, here)
    plain.finished(1, there)
    lines = stream.getvalue().splitlines()
    assert " on " not in lines[0] and lines[1].endswith("exit 3 1.00s on tls://10.0.0.7:4000")
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    live, outcome = LiveDisplay(2, console), Outcome(2)
    for index, result in enumerate((here, there)):
        live.finished(index, result)
        outcome.count(result)
    live.close(outcome, 1.0)
    table = console.file.getvalue()
    assert "worker" in table and "build-3 tls://10.0.0.7:4000" in table
