"""What `nspawn ps` and `nspawn cleanup` ask of the HCS backend: the compute systems nspawn owns,
and terminating one of them (twice is fine)."""

from __future__ import annotations

import pytest

from nspawn.backends import hcs
from nspawn.backends.hcs.native import computecore as cc
from nspawn.backends.hcs.native import vmcompute as vm
from nspawn.backends.hcs.native.loader import SIMULATOR_ENV
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)

DOC = {"SchemaVersion": {"Major": 2, "Minor": 1}, "ShouldTerminateOnLastHandleClosed": False, "Container": {}}


def test_owned_systems_lists_only_nspawn_s_and_terminate_is_idempotent(sim):
    ours = cc.create_compute_system("ours", {**DOC, "Owner": "nspawn"})
    theirs = cc.create_compute_system("theirs", {**DOC, "Owner": "docker"})
    ours.start()
    assert hcs.owned_systems() == [{"id": "ours", "state": "Running", "api": "v2"}]
    hcs.terminate_owned("ours")
    hcs.terminate_owned("ours")
    hcs.terminate_owned("never-was")
    ours.close()
    assert hcs.owned_systems() == []
    theirs.terminate()
    theirs.close()
    assert sim.wait_clean() == {}


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_releasing_a_system_of_either_generation_terminates_it(sim, api):
    """The journal's releaser, on a system a live handle still holds, then stopped, then gone."""
    from nspawn.backends.hcs.release import release_system

    native = {"v1": vm, "v2": cc}[api]
    doc = {**DOC, "Owner": "nspawn"} if api == "v2" else {"SystemType": "Container", "Owner": "nspawn"}
    with native.create_compute_system("held", doc) as held:
        held.start()
        release_system({"id": "held", "api": api})
        assert [s["State"] for s in native.enumerate_compute_systems()] == ["Stopped"]
        release_system({"id": "held", "api": api})  # already stopped: nothing to do
    release_system({"id": "held", "api": api})  # gone
    assert sim.wait_clean() == {}


def test_no_hcs_library_means_no_owned_systems(monkeypatch):
    monkeypatch.delenv(SIMULATOR_ENV, raising=False)
    assert hcs.owned_systems() == []
