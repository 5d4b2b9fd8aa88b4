"""A Dask cluster on this machine for the cluster tests: `dask scheduler` and two `nspawn worker`s,
each in a network namespace of its own (entered with nsenter --net=), joined by veth pairs to
a bridge in the scheduler's namespace, where the batch client runs too. Their traffic never
leaves these namespaces. Off loopback the workers must use TLS: the test CA and certificates
are made with the openssl command. Each worker has its own state and scratch directories, so
what a test leaves on a worker is judged there."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.linux.conftest import ROOT, container_processes

SUBNET = "10.216.0"  # inside the test's namespaces only
SCHEDULER_IP = f"{SUBNET}.1"
PORT = 8786
SCHEDULER = f"tls://{SCHEDULER_IP}:{PORT}"
READY_SECONDS = 60


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def make_certificates(directory: str) -> dict[str, dict[str, str]]:
    """A CA, and a certificate and key it signed for each of scheduler, worker and client."""
    ca_key, ca = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("openssl", "req", "-x509", *curve, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=nspawn test CA")
    made = {}
    for role in ("scheduler", "worker", "client"):
        key, csr, cert = (os.path.join(directory, f"{role}.{ext}") for ext in ("key", "csr", "pem"))
        _run("openssl", "req", *curve, "-keyout", key, "-out", csr, "-subj", f"/CN=nspawn test {role}")
        _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2")
        made[role] = {"ca": ca, "cert": cert, "key": key}
    return made


def self_signed(directory: str, ca: str) -> dict[str, str]:
    """A certificate the cluster's CA did not sign, beside that CA."""
    key, cert = os.path.join(directory, "rogue.key"), os.path.join(directory, "rogue.pem")
    _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
         "-out", cert, "-days", "2", "-subj", "/CN=nspawn rogue client")
    return {"ca": ca, "cert": cert, "key": key}


def tls_options(files: dict[str, str]) -> list[str]:
    return ["--tls-ca", files["ca"], "--tls-cert", files["cert"], "--tls-key", files["key"]]


def _dask() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "dask")
    return [script, "scheduler"] if os.path.exists(script) else [sys.executable, "-m", "distributed.cli.dask_scheduler"]


class Output:
    """A process's stderr, read on a thread, so that its pipe never fills and lines can be awaited."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, since: int = 0, timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines[since:]):
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} in:\n" + "".join(self.lines)
                self._changed.wait(left)

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)


class Worker:
    def __init__(self, cluster: "Cluster", index: int):
        self.cluster, self.index = cluster, index
        self.ip = f"{SUBNET}.{index + 2}"
        base = os.path.join(cluster.directory, f"worker{index}")
        self.state_dir, self.scratch_dir = os.path.join(base, "state"), os.path.join(base, "scratch")
        os.makedirs(self.state_dir)
        os.makedirs(self.scratch_dir)
        self.netns = cluster.namespace()
        self.process: subprocess.Popen | None = None
        self.output: Output | None = None

    def start(self) -> None:
        env = {**os.environ, "NSPAWN_STATE_DIR": self.state_dir, "NSPAWN_SCRATCH_DIR": self.scratch_dir, "PYTHONPATH": ROOT}
        self.process = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", sys.executable, "-m", "nspawn", "worker", SCHEDULER, "--cpus", "2",
             "--memory", "512M", "--name", f"worker{self.index}", *tls_options(self.cluster.certificates["worker"])],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.output = Output(self.process)
        self.output.wait_for(" serves ")

    @property
    def address_prefix(self) -> str:
        return f"tls://{self.ip}:"

    def kill(self) -> None:
        """SIGKILL, as a machine lost would end it: no rollback runs."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def journals(self, source: str = "") -> list[str]:
        """The journals of containers running (or left) here, of configs whose path holds `source`."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.state_dir, "*.journal"))):
            try:
                with open(path) as f:
                    header = json.loads(f.readline() or "{}")
            except (OSError, ValueError):
                continue
            if source in (header.get("source") or ""):
                found.append(path)
        return found

    def leftovers(self, container_ids: list[str]) -> list[str]:
        """What of this worker's containers is still on the host: journals, scratch, mounts,
        cgroups of `container_ids`, container processes."""
        found = [f"journal: {p}" for p in self.journals()]
        found += [f"scratch: {p}" for p in glob.glob(os.path.join(self.scratch_dir, "*"))]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount: {line.strip()}" for line in f if self.scratch_dir in line]
        for cid in container_ids:
            found += [f"cgroup: {p}" for p in glob.glob(f"/sys/fs/cgroup/**/{cid}", recursive=True)]
        found += [f"container process: {p}" for p in container_processes(self.scratch_dir)]
        return found


class Cluster:
    def __init__(self, directory: str):
        self.directory = directory
        self.certificates = make_certificates(directory)
        self._holders: list[subprocess.Popen] = []
        self.netns = self.namespace()
        self._ip("link", "set", "lo", "up")
        self._ip("link", "add", "br0", "type", "bridge")
        self._ip("addr", "add", f"{SCHEDULER_IP}/24", "dev", "br0")
        self._ip("link", "set", "br0", "up")
        self.scheduler: subprocess.Popen | None = None
        self.workers = [Worker(self, i) for i in range(2)]
        for worker in self.workers:
            self._connect(worker)

    def namespace(self) -> str:
        """A new network namespace, held by a sleeping process; its nsenter --net= path."""
        holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self._holders.append(holder)
        path = f"/proc/{holder.pid}/ns/net"
        deadline = time.monotonic() + 10
        while os.readlink(path) == os.readlink("/proc/self/ns/net"):  # until unshare has exec'd sleep
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return path

    def _ip(self, *argv: str, netns: str | None = None) -> None:
        _run("nsenter", f"--net={netns or self.netns}", "ip", *argv)

    def _connect(self, worker: Worker) -> None:
        holder = worker.netns.split("/")[2]
        name = f"veth{worker.index}"
        self._ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", holder)
        self._ip("link", "set", name, "master", "br0")
        self._ip("link", "set", name, "up")
        for argv in (("link", "set", "lo", "up"), ("addr", "add", f"{worker.ip}/24", "dev", "eth0"), ("link", "set", "eth0", "up")):
            self._ip(*argv, netns=worker.netns)

    def start(self) -> None:
        files = self.certificates["scheduler"]
        self.scheduler = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", *_dask(), "--host", SCHEDULER_IP, "--port", str(PORT), "--protocol", "tls",
             "--no-dashboard", "--tls-ca-file", files["ca"], "--tls-cert", files["cert"], "--tls-key", files["key"]],
            cwd=self.directory, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        Output(self.scheduler)
        for worker in self.workers:
            worker.start()

    def batch(self, *args: str, certificates: dict | None = None, env: dict | None = None) -> subprocess.Popen:
        """`nspawn batch --cluster` from the scheduler's namespace, as a client of the cluster
        (or with other `certificates`); stderr in plain lines."""
        options = tls_options(certificates or self.certificates["client"])
        return subprocess.Popen(["nsenter", f"--net={self.netns}", sys.executable, "-m", "nspawn", "batch", "--cluster", SCHEDULER,
                                 *options, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, **(env or {})})

    def on_scheduler(self, function: str) -> object:
        """What `function` (the source of a function of the Scheduler object) returns, run on the
        scheduler through a client in its namespace, as JSON."""
        files = self.certificates["client"]
        code = ("import json, sys\nfrom distributed import Client\nfrom distributed.security import Security\n"
                f"security = Security(require_encryption=True, tls_ca_file={files['ca']!r}, tls_client_cert={files['cert']!r}, "
                f"tls_client_key={files['key']!r})\n"
                f"with Client({SCHEDULER!r}, security=security, timeout=30) as client:\n"
                f"    print(json.dumps(client.run_on_scheduler({function})))\n")
        ran = subprocess.run(["nsenter", f"--net={self.netns}", sys.executable, "-c", code], cwd=self.directory,
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        return json.loads(ran.stdout.splitlines()[-1])

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.terminate()
            try:
                self.scheduler.wait(20)
            except subprocess.TimeoutExpired:
                self.scheduler.kill()
        for holder in self._holders:
            holder.kill()
            holder.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    for tool in ("nsenter", "unshare", "ip", "openssl"):
        assert shutil.which(tool), f"{tool} is needed (scripts/venv.sh installs it)"
    made = Cluster(str(tmp_path_factory.mktemp("cluster")))
    try:
        made.start()
        yield made
    finally:
        made.close()
