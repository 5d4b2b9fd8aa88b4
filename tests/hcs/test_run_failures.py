"""Every call of the v1 and v2 sequences (and of NAT on each) failing in turn: `nspawn run`
exits 125 with one line naming the call, the HRESULT and HCS's words, and leaves nothing
behind, neither in the simulated HCS nor on disk."""

from __future__ import annotations

import pytest

HR, HR_TEXT = 0x80370105, "0x80370105 HCS_E_INVALID_STATE"
LAYERS = ["NameToGuid", "CreateSandboxLayer", "ActivateLayer", "PrepareLayer", "GetLayerMountPath"]
# (fault spec, API, network, the error line's call, does HCS hand back a document with its words)
CASES = (
    [(f"{c}=", api, "none", c, False) for c in LAYERS for api in ("v1", "v2")]
    + [(f"computecore!{c}=", "v2", "none", c, True) for c in ("HcsCreateComputeSystem", "HcsStartComputeSystem", "HcsCreateProcess")]
    + [(f"computecore!{c}=", "v2", "none", c, False) for c in ("HcsSetComputeSystemCallback", "HcsSetProcessCallback")]
    + [(f"computecore!{c}=async:", "v2", "none", c, True) for c in ("HcsCreateComputeSystem", "HcsStartComputeSystem")]
    + [(f"vmcompute!{c}=", "v1", "none", c, True) for c in ("HcsCreateComputeSystem", "HcsStartComputeSystem", "HcsCreateProcess")]
    + [(f"vmcompute!{c}=async:", "v1", "none", c, True) for c in ("HcsCreateComputeSystem", "HcsStartComputeSystem")]
    + [(f"{c}=", "v1", "none", c, False) for c in ("HcsRegisterComputeSystemCallback", "HcsRegisterProcessCallback")]
    + [(f"{c}=", "v2", "nat", c, True) for c in ("HcnEnumerateNetworks", "HcnOpenNetwork", "HcnCreateEndpoint",
                                                 "HcnCreateNamespace", "HcnModifyNamespace")]
    + [("HNSCall=", "v1", "nat", "HNSCall", False)]
)


def _fault(spec: str) -> str:
    """"X=" → "X=<HR>", "X=async:" → "X=<HR>:async"."""
    name, _, mode = spec.partition("=")
    return f"{name}={HR:#x}" + (":async" if mode == "async:" else "")


@pytest.mark.parametrize("spec, api, network, call, has_text", CASES,
                         ids=[f"{api}-{network}-{spec.rstrip('=:')}" for spec, api, network, _, _ in CASES])
def test_a_failing_call_is_one_line_and_leaves_nothing(host, spec, api, network, call, has_text):
    host.script("ok.sh", "echo should not run\n")
    run = host.run(process_executable="ok.sh", hcs_api=api, network=network, faults=_fault(spec))
    assert run.returncode == 125, run.stderr
    expected = f"error: {call} failed: {HR_TEXT}"
    if has_text:
        expected += f": {call} failed (simulated fault)"
    assert run.errors == [expected]
    assert run.stdout == ""
    assert run.live == {}, run.live
    assert host.scratch_folders() == []


def test_a_failing_teardown_call_is_reported_and_the_other_releases_still_run(host):
    host.script("ok.sh", "echo ran\n")
    run = host.run(process_executable="ok.sh", network="nat", faults=f"UnprepareLayer={HR:#x}")
    assert run.stdout == "ran\n"
    assert run.returncode == 125
    unprepare, deactivate, destroy = run.errors
    assert unprepare.startswith("error: not released: hcs-layer-preparation ")
    assert unprepare.endswith(f"UnprepareLayer failed: {HR_TEXT}")
    # HCS refuses the next steps on a layer still prepared, and says so.
    assert deactivate.startswith("error: not released: hcs-layer-activation ") and "DeactivateLayer failed" in deactivate
    assert destroy.startswith("error: not released: hcs-layer ") and "DestroyLayer failed" in destroy
    # The system, the namespace and the endpoint went; the layer stays prepared, and the journal
    # stays for `nspawn cleanup`.
    live = run.live
    assert set(live) == {"layers"} and live["layers"][0]["prepared"], live
    assert run.calls("HcnDeleteEndpoint") and run.calls("HcnDeleteNamespace")
    assert list((host.tmp / "state").glob("*.journal"))
