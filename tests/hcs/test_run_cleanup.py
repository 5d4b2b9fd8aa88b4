"""What a SIGKILLed launcher leaves with HCS, and what `nspawn ps` and `nspawn cleanup` make of
it. The simulated service keeps its registry in a state directory (tests/hcs_sim/state.c), so
the launcher, `ps` and `cleanup` are three processes seeing one HCS, as on Windows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, nspawn
from tests.hcs.conftest import gone, host  # noqa: F401 (fixture)
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)
from tests.hcs_sim.ledger import STATE_ENV, persisted

MATRIX = pytest.mark.parametrize("api,network", [("v1", "none"), ("v1", "nat"), ("v2", "none"), ("v2", "nat")])


class Service:
    """One simulated HCS host: its state, nspawn's journals, and launchers started on it."""

    def __init__(self, host):
        self.host = host
        self.state = host.tmp / "hcs-service"
        self.journals = host.tmp / "journals"
        self.state.mkdir()
        self.env = {**host.env(None), STATE_ENV: str(self.state), "NSPAWN_STATE_DIR": str(self.journals)}

    def launch(self, api: str, network: str):
        """A launcher whose payload prints its pid and sleeps; (launcher, payload pid)."""
        script = self.host.script("sleeper.sh", "echo $$\nexec sleep 300\n")
        config = self.host.config(process_executable=script, hcs_api=api, network=network)
        launcher = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "-c", str(config)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True, env={**os.environ, **self.env}, cwd=ROOT)
        line = launcher.stdout.readline()
        assert line.strip().isdigit(), f"no payload pid: {line!r} {launcher.stderr.read() if not line else ''}"
        return launcher, int(line)

    def nspawn(self, *args):
        return nspawn(*args, env=self.env)

    def ps(self) -> list[dict]:
        result = self.nspawn("ps", "--json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def left(self) -> dict:
        """What the service still holds, and the scratch folders beside the parent layer."""
        found = persisted(self.state)
        if self.host.scratch_folders():
            found["scratch folders"] = self.host.scratch_folders()
        return found


def kill(launcher) -> None:
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    launcher.stdout.close()
    launcher.stderr.close()


@MATRIX
def test_cleanup_removes_what_a_killed_launcher_left(host, api, network):
    service = Service(host)
    launcher, payload = service.launch(api, network)
    kill(launcher)

    # The document asks HCS to end the system with its creator's last handle: the payload goes.
    assert gone(payload)
    [row] = service.ps()
    assert row["state"] == "orphaned" and row["launcher_pid"] == launcher.pid
    left = service.left()
    assert "systems" not in left
    assert [(layer["activated"], layer["prepared"]) for layer in left["layers"]] == [(True, True)]
    assert left["scratch folders"] == [row["id"]]
    assert ("endpoints" in left) == (network == "nat")
    assert ("namespaces" in left) == (network == "nat" and api == "v2")

    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert service.left() == {}
    assert service.ps() == []
    assert not list(service.journals.glob("*"))


@MATRIX
def test_cleanup_terminates_a_system_whose_journal_is_gone(host, api, network):
    """A launcher that cannot run (stopped) and whose journal was deleted: its system is
    "unjournaled", and cleanup terminates it through the backend's terminate_owned."""
    service = Service(host)
    launcher, payload = service.launch(api, network)
    launcher.send_signal(signal.SIGSTOP)
    try:
        for journal in service.journals.glob("*"):
            journal.unlink()
        [row] = service.ps()
        assert row["state"] == "unjournaled" and row["launcher_pid"] is None
        assert len(persisted(service.state)["systems"]) == 1

        result = service.nspawn("cleanup")
        assert result.returncode == 0, result.stderr
        assert f"{row['id']}: terminated its compute system" in result.stdout
        assert gone(payload)
        assert "systems" not in service.left() and service.ps() == []
    finally:
        kill(launcher)
    # Without a journal nothing names the layers home nor the network objects to cleanup.
    left = service.left()
    assert left["scratch folders"] == [row["id"]] and left["layers"][0]["id"].endswith(row["id"])
    assert ("endpoints" in left) == (network == "nat")


def test_cleanup_leaves_a_running_launcher_alone(host):
    service = Service(host)
    launcher, payload = service.launch("v2", "nat")
    before = service.left()
    result = service.nspawn("cleanup")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert not gone(payload, timeout=0.2)
    assert service.left() == before and [r["state"] for r in service.ps()] == ["running"]

    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 128 + signal.SIGINT, err
    assert gone(payload) and service.left() == {} and service.ps() == []


def test_an_hns_endpoint_whose_id_never_reached_the_journal_is_found_by_name(sim):
    """A v1 launcher killed between HNS's answer and the journal update left an entry with only
    the endpoint's Name (the container id); the releaser finds it by that name."""
    from nspawn.backends.hcs.native.vmcompute import hns_call
    from nspawn.backends.hcs.release import release_hns_endpoint

    nat = [n["ID"] for n in hns_call("GET", "/networks/") if n["Name"] == "nat"][0]
    hns_call("POST", "/endpoints/", {"VirtualNetwork": nat, "Name": "nspawn-killed"})
    other = hns_call("POST", "/endpoints/", {"VirtualNetwork": nat, "Name": "someone-else"})["ID"]
    release_hns_endpoint({"what": "nspawn-killed", "name": "nspawn-killed"})
    release_hns_endpoint({"what": "nspawn-killed", "name": "nspawn-killed"})
    assert [e["ID"] for e in sim.ledger()["endpoints"]] == [other]
