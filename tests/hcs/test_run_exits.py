"""A process's end as Windows reports it: an exit before the callback is registered sends no
event, so the run asks once after registering."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_process_that_ends_before_its_callback_is_registered_is_seen_ended(host, api):
    # Held back just before registering, the process has long exited (and its event is lost).
    host.script("quick.sh", "exit 4\n")
    register = "HcsRegisterProcessCallback" if api == "v1" else "HcsSetProcessCallback"
    run = host.run(process_executable="quick.sh", hcs_api=api, faults=f"{register}=delay:300")
    assert (run.returncode, run.errors) == (4, []), run.stderr
    assert run.live == {}, run.live
