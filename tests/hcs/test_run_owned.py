"""What `nspawn ps` and `nspawn cleanup` ask of the HCS backend: the compute systems nspawn owns,
and terminating one of them (twice is fine)."""

from __future__ import annotations

from nspawn.backends import hcs
from nspawn.backends.hcs.native import computecore as cc
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


def test_no_hcs_library_means_no_owned_systems(monkeypatch):
    monkeypatch.delenv(SIMULATOR_ENV, raising=False)
    assert hcs.owned_systems() == []
