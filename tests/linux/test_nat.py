"""`network: nat` for real, offline: each test moves this process into a fresh network namespace
(the "host", whose bridge and nftables table die with it), where an "outside" namespace, joined
by a veth pair, holds a server and has no route back to the containers' subnet. Nothing touches
the machine's own network namespace, and no packet leaves the machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nspawn.backends.linux import libc
from tests.linux.conftest import ROOT, needs_root

pytestmark = needs_root

HOST_SIDE, OUTSIDE = "198.51.100.1", "198.51.100.2"  # TEST-NET-2: routed nowhere
PYTHON = "/usr/bin/python3"  # the host's, which the container sees (its root is the host's /)

# Prints the address the client was seen from, to every connection.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode() + b"\\n"); c.close()
"""
# Connects to argv[1]:argv[2]; prints what the server said, or "failed <reason>".
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]) if len(sys.argv) > 3 else 5)
    print(c.recv(100).decode().strip())
except OSError as e:
    print("failed", e)
"""
# Prints its own eth0 address, serves on port 80 and prints "ready".
ADDRESS = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('198.51.100.2', 9)); print(s.getsockname()[0], flush=True)"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


class Host:
    """The test's own network namespace and its outside neighbour."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.state = os.environ["NSPAWN_STATE_DIR"]

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw)
        self.procs.append(proc)
        return proc

    def nspawn(self, *args: str, **kw) -> subprocess.Popen:
        return self.spawn([sys.executable, "-m", "nspawn", *args], **kw)

    def container(self, network: str, code: str, *args: str, extra=()) -> subprocess.Popen:
        return self.nspawn("run", "--network", network, *extra, "--", PYTHON, "-c", code, *args)

    def run(self, network: str, code: str, *args: str, extra=()) -> str:
        proc = self.container(network, code, *args, extra=extra)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return out.strip()

    def outside(self, code: str, *args: str) -> subprocess.Popen:
        return self.spawn(["nsenter", f"--net=/proc/{self.outside_pid}/ns/net", PYTHON, "-c", code, *args])

    def close(self) -> None:
        """Stops what a test left running as a user would (SIGTERM: the launchers roll back),
        then finishes the rollback of any that had to be killed: a launcher killed and never
        cleaned up would leave its cgroups on the host."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        subprocess.run([sys.executable, "-m", "nspawn", "cleanup"], capture_output=True, cwd=ROOT, check=True)


@pytest.fixture
def host(tmp_path):
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    libc.unshare(libc.CLONE_NEWNET)
    h = Host(tmp_path)
    try:
        ip("link", "set", "lo", "up")
        keeper = h.spawn(["unshare", "--net", "sleep", "600"])
        h.outside_pid = keeper.pid
        while os.readlink(f"/proc/{keeper.pid}/ns/net") == os.readlink("/proc/thread-self/ns/net"):
            time.sleep(0.01)  # until unshare has made it
        ip("link", "add", "vout", "type", "veth", "peer", "name", "vin", "netns", str(keeper.pid))
        ip("addr", "add", f"{HOST_SIDE}/24", "dev", "vout")
        ip("link", "set", "vout", "up")
        inside = ["nsenter", f"--net=/proc/{keeper.pid}/ns/net", "ip"]
        for args in (["addr", "add", f"{OUTSIDE}/24", "dev", "vin"], ["link", "set", "vin", "up"], ["link", "set", "lo", "up"]):
            subprocess.run(inside + args, check=True)
        server = h.outside(SERVER, "7000")
        assert server.stdout.readline().strip() == "ready"
        yield h
    finally:
        h.close()
        libc.setns(own, libc.CLONE_NEWNET)
        os.close(own)


def _ready(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()
    assert line, proc.stderr.read() if proc.poll() is not None else "no output"
    return line


def test_nat_reaches_the_outside_as_the_host_and_none_does_not(host):
    # The outside namespace has no route to the container subnet: only masquerading answers.
    assert "10.213.0.0" not in ip("route")  # nothing of nspawn's yet
    assert host.run("nat", CLIENT, OUTSIDE, "7000") == HOST_SIDE
    assert host.run("none", CLIENT, OUTSIDE, "7000", "2").startswith("failed")
    routes = subprocess.run(["nsenter", f"--net=/proc/{host.outside_pid}/ns/net", "ip", "route"],
                            capture_output=True, text=True, check=True).stdout
    assert "10.213" not in routes


def test_published_port_answers_from_loopback_and_another_namespace(host):
    server = host.container("nat", ADDRESS + "\n" + SERVER, "80", extra=("-p", "8080:80", "--publish", "9090:80/tcp"))
    address = _ready(server)
    assert _ready(server) == "ready"
    # From the host's loopback: masqueraded to the bridge's address on the way in.
    with socket.create_connection(("127.0.0.1", 8080), timeout=5) as c:
        assert c.recv(100).decode().strip() == "10.213.0.1"
    # From another namespace, to the host's address there: the client's own address arrives.
    client = host.outside(CLIENT, HOST_SIDE, "9090")
    assert client.communicate(timeout=30)[0].strip() == OUTSIDE
    assert address.startswith("10.213.")
    rules = json.loads(subprocess.run(["nft", "-j", "list", "table", "ip", "nspawn"], capture_output=True, text=True, check=True).stdout)
    dnat = [item["rule"] for item in rules["nftables"] if "rule" in item and '"dnat": {' in json.dumps(item)]
    assert len(dnat) == 4 and {r["chain"] for r in dnat} == {"prerouting", "output"}
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=30)
    rules = subprocess.run(["nft", "list", "table", "ip", "nspawn"], capture_output=True, text=True, check=True).stdout
    assert "dnat to" not in rules  # its rules went with it
    assert os.listdir(os.path.join(host.state, "nat", "ports")) == []


def test_a_port_published_twice_is_refused(host):
    first = host.container("nat", SERVER, "80", extra=("-p", "8081:80"))
    assert _ready(first) == "ready"
    second = host.container("nat", SERVER, "80", extra=("-p", "8081:81"))
    _, err = second.communicate(timeout=60)
    assert second.returncode == 125 and "port 8081/tcp is already published" in err


def test_containers_cannot_reach_each_other(host):
    a = host.container("nat", ADDRESS + "\n" + SERVER, "80")
    address = _ready(a)
    assert _ready(a) == "ready"
    with socket.create_connection((address, 80), timeout=5) as c:  # the host can: the server is up
        assert c.recv(100).decode().strip() == "10.213.0.1"
    assert host.run("nat", CLIENT, address, "80", "2").startswith("failed")
    # Nor the host's own services, through any of its addresses.
    own = host.spawn([PYTHON, "-c", SERVER, "7100"])
    assert _ready(own) == "ready"
    for target in ("10.213.0.1", HOST_SIDE, "127.0.0.1"):
        assert host.run("nat", CLIENT, target, "7100", "2").startswith("failed"), target


def test_twenty_containers_at_once_get_distinct_addresses(host, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wait = ADDRESS + "\nimport os, time\nwhile not os.path.exists('/barrier/go'): time.sleep(0.05)"
    procs = [host.container("nat", wait, extra=("--bind", f"{barrier}:/barrier")) for _ in range(20)]
    found = [_ready(p) for p in procs]  # all twenty hold their address at this point
    (barrier / "go").touch()
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    assert len(set(found)) == 20, found
    assert all(a.startswith("10.213.") for a in found)
    assert os.listdir(os.path.join(host.state, "nat", "leases")) == []


def _links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()}


def test_cleanup_after_sigkill_leaves_nothing(host):
    before_links, before_rules = _links(), subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    proc = host.container("nat", ADDRESS + "\n" + SERVER, "80", extra=("-p", "8082:80"))
    _ready(proc)
    assert _ready(proc) == "ready"
    assert "nspawn0" in _links() and len(_links()) == len(before_links) + 2  # the bridge and the veth
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert os.listdir(os.path.join(host.state, "nat", "leases"))  # what the launcher left
    done = subprocess.run([sys.executable, "-m", "nspawn", "cleanup"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    # The veth goes with the container's network namespace, which the kernel tears down by itself.
    deadline = time.monotonic() + 30
    while _links() != before_links and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _links() == before_links
    assert subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout == before_rules
    assert "10.213." not in ip("route") + ip("addr")
    nat = os.path.join(host.state, "nat")
    assert os.listdir(os.path.join(nat, "leases")) == os.listdir(os.path.join(nat, "ports")) == []
    assert not os.path.exists(os.path.join(nat, "subnet"))
    assert not [n for n in os.listdir(host.state) if n.endswith(".journal")]


def test_doctor_and_verbose_say_what_nat_does_to_the_host(host):
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "0"  # a fresh namespace's default
    ran = host.nspawn("-v", "run", "--network", "nat", "--", "/bin/true")
    _, err = ran.communicate(timeout=60)
    assert ran.returncode == 0, err
    assert "turned IP forwarding on" in err and "made the bridge nspawn0 (10.213.0.0/16)" in err
    subprocess.run(["nft", "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"],
                   check=True)
    doctor = subprocess.run([sys.executable, "-m", "nspawn", "doctor"], capture_output=True, text=True, cwd=ROOT)
    lines = {line.split(":")[1].strip(): line for line in doctor.stdout.splitlines() if ": " in line and "nat" in line.split(":")[0]}
    assert "on" in lines["IP forwarding"] and "nspawn0 is up with 10.213.0.0/16, 0 container" in lines["bridge"]
    assert "table ip nspawn in place" in lines["nftables"]
    assert "table ip filter chain FORWARD drops forwarded packets" in lines["other firewalls"]


@pytest.mark.parametrize("step", ["network", "fork-payload"])
def test_a_failed_start_rolls_the_network_back(host, step):
    """Failures once the veth, the lease and the port rules exist: nothing of them stays."""
    before = _links()
    ran = host.nspawn("run", "--network", "nat", "-p", "8083:80", "--", "/bin/true", env={**os.environ, "NSPAWN_FAIL_AT": step})
    _, err = ran.communicate(timeout=60)
    assert ran.returncode == 125 and f"{step}: failure injected" in err, err
    kept = before | {"nspawn0"}  # the bridge stays while unused (cleanup's to remove)
    deadline = time.monotonic() + 30
    while _links() != kept and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _links() == kept
    nat = os.path.join(host.state, "nat")
    assert os.listdir(os.path.join(nat, "leases")) == os.listdir(os.path.join(nat, "ports")) == []
    assert "dnat to" not in subprocess.run(["nft", "list", "table", "ip", "nspawn"], capture_output=True, text=True, check=True).stdout
    subprocess.run(["nft", "delete table ip nspawn"], check=True)
    doctor = subprocess.run([sys.executable, "-m", "nspawn", "doctor"], capture_output=True, text=True, cwd=ROOT)
    assert "table ip nspawn is gone while nspawn0 stays" in doctor.stdout
