"""Real Windows runs on a nanoserver parent layer (NSPAWN_TEST_PARENT_LAYER, which the windows
workflow takes from `docker inspect`); after every test no compute system or scratch layer of
nspawn's is left. Skipped anywhere else, with the reason."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import skip_unless_ci
from tests.windows.hcs_host import PARENT, PARENT_ENV, scratch_folders

SKIP_REASON = "needs a Windows host with the Containers feature" if sys.platform != "win32" else None


def pytest_collection_modifyitems(items):
    here = os.path.dirname(__file__)
    for item in items:
        if SKIP_REASON and str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(autouse=True)
def nothing_left_behind():
    if SKIP_REASON:
        yield
        return
    if not PARENT:  # on Windows without the layer: in the windows workflow, a failure
        skip_unless_ci(f"{PARENT_ENV} is not set (the windows workflow sets it from docker inspect)")
    from nspawn.backends.hcs.native import computecore

    before = scratch_folders()
    yield
    owned = computecore.enumerate_compute_systems({"Owners": ["nspawn"]})
    assert owned == [], f"compute systems left running: {owned}"
    assert scratch_folders() - before == set(), "scratch layers left behind"
