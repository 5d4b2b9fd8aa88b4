"""pytest fixtures; test modules import them by name."""

from __future__ import annotations

import pytest

from nspawn.backends.hcs.native.loader import SIMULATOR_ENV
from tests.conftest import skip_unless_ci
from tests.hcs_sim.build import BuildUnavailable, build_simulator
from tests.hcs_sim.ledger import Simulator


@pytest.fixture(scope="session")
def sim_library():
    try:
        return build_simulator()
    except BuildUnavailable as e:
        skip_unless_ci(f"HCS simulator not built: {e}")


@pytest.fixture
def sim(sim_library, monkeypatch):
    """A reset simulator that the bindings load through NSPAWN_HCS_LIBRARY."""
    monkeypatch.setenv(SIMULATOR_ENV, str(sim_library))
    simulator = Simulator(sim_library)
    simulator.reset()
    yield simulator
    simulator.reset()
