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
from tests.hcs_sim.ledger import FAULTS_ENV, STATE_ENV, persisted

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

    def killed_and_unjournaled(self, api: str, network: str) -> str:
        """A launcher SIGKILLed mid-run whose journal is then deleted; its container id."""
        launcher, _ = self.launch(api, network)
        kill(launcher)
        [journal] = self.journals.glob("*.journal")
        journal.unlink()
        return journal.stem

    def nspawn(self, *args):
        return nspawn(*args, env=self.env)

    def ps(self) -> list[dict]:
        result = self.nspawn("ps", "--json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def sweep(self, live: set[str] = frozenset(), faults: str = "") -> list[str]:
        """The backend's sweep(live) run as `nspawn cleanup` runs it, in a process of its own;
        SweepError's message and what it removed when it raises."""
        code = ("import json, sys\nfrom nspawn.backends import hcs\nfrom nspawn.backends.hcs.leftovers import SweepError\n"
                "try:\n    print(json.dumps(hcs.sweep(set(sys.argv[1:]))))\n"
                "except SweepError as e:\n    sys.exit(json.dumps([str(e), e.removed]))\n")
        result = subprocess.run([sys.executable, "-c", code, *live], capture_output=True, text=True,
                                env={**os.environ, **self.env, FAULTS_ENV: faults}, cwd=ROOT, timeout=60)
        if result.returncode == 1 and result.stderr.startswith("["):
            raise SweepFailed(*json.loads(result.stderr))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def left(self) -> dict:
        """What the service still holds, and the scratch folders beside the parent layer."""
        found = persisted(self.state)
        if self.host.scratch_folders():
            found["scratch folders"] = self.host.scratch_folders()
        return found


class SweepFailed(Exception):
    def __init__(self, message: str, removed: list[str]):
        super().__init__(message)
        self.message, self.removed = message, removed


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
    assert not list(service.journals.glob("*.journal"))


@MATRIX
def test_cleanup_terminates_a_system_whose_journal_is_gone(host, api, network):
    """A launcher that cannot run (stopped) and whose journal was deleted: its system is
    "unjournaled", and cleanup terminates it through the backend's terminate_owned."""
    service = Service(host)
    launcher, payload = service.launch(api, network)
    launcher.send_signal(signal.SIGSTOP)
    try:
        for journal in service.journals.glob("*.journal"):
            journal.unlink()
        [row] = service.ps()
        assert row["state"] == "unjournaled" and row["launcher_pid"] is None
        assert len(persisted(service.state)["systems"]) == 1

        result = service.nspawn("cleanup")
        assert result.returncode == 0, result.stderr
        assert f"{row['id']}: terminated its compute system" in result.stdout
        assert f"removed {row['id']}: scratch layer" in result.stdout  # then swept what it left
        assert gone(payload)
        assert service.left() == {} and service.ps() == []
    finally:
        kill(launcher)


def swept(container_id: str, api: str, service: Service) -> list[str]:
    """What sweep should report removing for one container, from what the service holds."""
    from nspawn.backends.hcs.network import hcn_ids

    endpoint, namespace = hcn_ids(container_id)
    left = service.left()
    found = [f"{container_id}: scratch layer {service.host.layers / container_id}"]
    if api == "v2" and left.get("namespaces"):
        found += [f"{container_id}: HCN endpoint {endpoint}", f"{container_id}: HCN namespace {namespace}"]
    if api == "v1":
        found += [f"{container_id}: HNS endpoint {e['ID']}" for e in left.get("endpoints", [])]
    return sorted(found)


@MATRIX
def test_sweep_removes_what_a_killed_launcher_left_when_its_journal_is_gone(host, api, network):
    service = Service(host)
    container_id = service.killed_and_unjournaled(api, network)
    assert service.ps() == [] and ("endpoints" in service.left()) == (network == "nat")

    expected = swept(container_id, api, service)
    assert sorted(service.sweep()) == expected
    assert service.left() == {}
    assert service.sweep() == []


def test_nspawn_cleanup_sweeps_what_a_journal_no_longer_names(host):
    service = Service(host)
    expected = swept(service.killed_and_unjournaled("v2", "nat"), "v2", service)
    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert sorted(line.removeprefix("removed ") for line in result.stdout.splitlines()) == expected
    assert service.left() == {}


def test_a_sweep_lists_the_hns_endpoints_once_for_all_the_containers_it_looks_at(host):
    service = Service(host)
    killed = {service.killed_and_unjournaled(api, "nat") for api in ("v1", "v1", "v2")}
    removed = service.sweep()
    assert {line.split(":")[0] for line in removed} == killed and service.left() == {}
    assert sum(1 for line in removed if ": HNS endpoint " in line) == 2
    sweep_calls = json.loads(host.ledger_path.read_text())["calls"]
    assert [c["args"][:2] for c in sweep_calls if c["call"] == "vmcompute!HNSCall"].count(["GET", "/endpoints/"]) == 1


def test_a_layer_sweep_cannot_destroy_is_named_and_the_rest_still_goes(host):
    service = Service(host)
    container_id = service.killed_and_unjournaled("v1", "nat")
    with pytest.raises(SweepFailed) as failed:
        service.sweep(faults="DestroyLayer=0x80370105")
    assert failed.value.message == (f"not removed: {container_id}: DestroyLayer failed: 0x80370105 HCS_E_INVALID_STATE")
    [endpoint] = failed.value.removed
    assert endpoint.startswith(f"{container_id}: HNS endpoint ")
    assert set(service.left()) == {"layers", "scratch folders"}
    assert sorted(service.sweep()) == [f"{container_id}: scratch layer {host.layers / container_id}"]
    assert service.left() == {}


def test_sweep_never_touches_what_a_live_launcher_or_a_journal_names(host):
    service = Service(host)
    alive, alive_payload = service.launch("v2", "nat")
    held = service.left()
    killed, _ = service.launch("v1", "nat")
    kill(killed)  # its journal stays: cleanup's to finish, not sweep's
    before = service.left()
    assert service.sweep() == [] and service.left() == before
    ids = {row["id"] for row in service.ps()}
    assert service.sweep(live=ids) == [] and service.left() == before

    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert service.left() == held and not gone(alive_payload, timeout=0.2)
    alive.send_signal(signal.SIGINT)
    alive.communicate(timeout=60)
    assert alive.returncode == 128 + signal.SIGINT
    assert service.left() == {}


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
