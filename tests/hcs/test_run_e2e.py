"""`nspawn run` end to end through the simulated HCS, both API generations: output, exit codes,
timeout, the process's view (argv, environment, working directory), stdin, stdout_filename,
Hyper-V isolation, affinity, limits reporting and NAT. After every run the simulator's ledger is
empty and no scratch layer is left on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nspawn.backends import contract
from nspawn.backends.hcs.affinity import processor_groups
from nspawn.errors import LaunchError
from tests.conftest import ROOT
from tests.hcs.conftest import gone

APIS = pytest.mark.parametrize("api", ["v1", "v2"])
ARGS = ["plain", "with space", 'a "quoted" word', "back\\slash", "trailing\\", "\\\\server\\share", ""]


def clean(run, host) -> None:
    assert run.live == {}, run.live
    assert host.scratch_folders() == []


@APIS
def test_the_process_sees_its_argv_environment_and_directory_and_streams_go_apart(host, api):
    host.script("show.sh", 'for a in "$@"; do printf "<%s>\\n" "$a"; done\n'
                           'echo "FOO=$FOO"\npwd\necho "to stderr" >&2\nexit 3\n')
    (host.job / "sub").mkdir()
    run = host.run(process_executable="show.sh", process_arguments=ARGS, environment={"FOO": "b a r"},
                   working_directory="C:\\job\\sub", hcs_api=api)
    assert run.returncode == 3, run.stderr
    assert run.stdout.splitlines() == [f"<{a}>" for a in ARGS] + ["FOO=b a r", str(host.job / "sub")]
    assert run.errors == ["to stderr"]
    assert run.calls(f"{'computecore' if api == 'v2' else 'vmcompute'}!HcsCreateProcess")
    clean(run, host)


@APIS
@pytest.mark.parametrize("code", [0, 255])
def test_the_exit_code_is_the_process_s(host, api, code):
    host.script("exit.sh", f"exit {code}\n")
    run = host.run(process_executable="exit.sh", hcs_api=api)
    assert (run.returncode, run.errors) == (code, [])
    clean(run, host)


@APIS
def test_a_timeout_stops_the_process_firmly_when_it_ignores_ctrl_shutdown(host, api):
    # The shell ignores CtrlShutdown (SIGTERM in the simulator) and a child it forked keeps stdout open:
    # the kill comes after the grace, and ending the silo closes the pipe HCS left open.
    host.script("stubborn.sh", "trap '' INT TERM\necho $$ > pid\nsleep 60 &\necho $! > child\necho started\nwait\n")
    run = host.run("--json", process_executable="stubborn.sh", timeout_seconds=0.3, stop_grace_seconds=0.3, hcs_api=api)
    assert run.returncode == 124, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["timed_out"] is True
    for name in ("pid", "child"):
        assert gone(int((host.job / name).read_text()))
    assert run.calls("HcsSignalProcess") and run.calls("HcsTerminateProcess")
    clean(run, host)


def test_a_timeout_stops_a_cooperating_process_politely(host):
    host.script("sleepy.sh", "exec sleep 60\n")
    run = host.run(process_executable="sleepy.sh", timeout_seconds=0.2, stop_grace_seconds=30)
    assert run.returncode == 124
    assert run.calls("HcsSignalProcess") and not run.calls("HcsTerminateProcess")
    clean(run, host)


@APIS
def test_stdout_filename_gets_both_streams_in_the_process_directory(host, api):
    host.script("talk.sh", "echo out\necho err >&2\n")
    run = host.run(process_executable="talk.sh", stdout_filename="log.txt", hcs_api=api)
    assert run.returncode == 0
    assert (run.stdout, run.errors) == ("out\n", ["err"])
    assert sorted((host.job / "log.txt").read_text().splitlines()) == ["err", "out"]
    clean(run, host)


@APIS
def test_piped_stdin_reaches_the_process_and_ends(host, api):
    host.script("cat.sh", "exec cat\n")
    run = host.run(process_executable="cat.sh", input="line one\nline two\n", hcs_api=api)
    assert (run.returncode, run.stdout) == (0, "line one\nline two\n")
    clean(run, host)


def test_auto_takes_v2_where_computecore_loads(host):
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh")
    assert run.calls("computecore!HcsCreateComputeSystem") and not run.calls("vmcompute!HcsCreateComputeSystem")
    clean(run, host)


@APIS
def test_layers_are_made_from_the_parent_chain_and_released_in_reverse(host, api):
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh", hcs_api=api)
    layer_calls = [c["call"].split("!")[1] for c in run.ledger["calls"]
                   if c["call"].split("!")[1] in ("CreateSandboxLayer", "ActivateLayer", "PrepareLayer", "GetLayerMountPath",
                                                 "UnprepareLayer", "DeactivateLayer", "DestroyLayer")]
    assert layer_calls[0] == "CreateSandboxLayer" and layer_calls[-3:] == ["UnprepareLayer", "DeactivateLayer", "DestroyLayer"]
    (create,) = [c["args"] for c in run.calls("CreateSandboxLayer")]
    assert [layer["path"] for layer in create["layers"]] == [str(host.parent), str(host.base)]
    assert create["home"] == str(host.layers)
    # Each layer's id is asked of HCS once, for the sandbox, the preparation and the document.
    assert [c["args"] for c in run.calls("NameToGuid")] == [["parent"], ["base"]]
    clean(run, host)


def test_prepare_is_retried_while_the_volume_is_not_ready_then_reported(host):
    # hcsshim's retry of Activate+Prepare on ERROR_NOT_READY (layers.py), here never ready.
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh", faults="PrepareLayer=0x80070015")
    assert run.returncode == 125
    assert (len(run.calls("ActivateLayer")), len(run.calls("PrepareLayer"))) == (5, 5)
    assert len(run.calls("DeactivateLayer")) == 5  # four between the attempts, one in the rollback
    assert not run.calls("UnprepareLayer")  # never prepared: nothing to undo
    assert len(run.calls("NameToGuid")) == 2  # once a layer, not once an attempt
    assert run.errors == ["error: PrepareLayer failed: 0x80070015 ERROR_NOT_READY"]
    clean(run, host)


def test_hyperv_runs_the_v1_document_with_the_utility_vm_of_the_chain(host):
    host.script("ok.sh", "echo hi\n")
    run = host.run(process_executable="ok.sh", isolation="hyperv")
    assert (run.returncode, run.stdout) == (0, "hi\n")
    (doc,) = run.documents("vmcompute!HcsCreateComputeSystem")
    assert doc["HvPartition"] is True and "VolumePath" not in doc
    assert doc["HvRuntime"] == {"ImagePath": str(host.base / "UtilityVM")}
    assert not run.calls("ActivateLayer") and not run.calls("PrepareLayer")  # HCS attaches the scratch itself
    clean(run, host)


@APIS
def test_cpu_affinity_lands_on_the_silo_before_start(host, api):
    host.script("cpus.sh", "grep Cpus_allowed_list /proc/self/status\n")
    run = host.run("--json", process_executable="cpus.sh", cpu_affinity_hex="0x1", hcs_api=api)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].split() == ["Cpus_allowed_list:", "0"]
    (opened,) = run.calls("NtOpenJobObject")
    result = json.loads(run.stdout.splitlines()[-1])
    assert opened["args"] == [f"\\Container_{result['container_id']}"]
    names = [c["call"].split("!")[1] for c in run.ledger["calls"]]
    assert names.index("SetInformationJobObject") < names.index("HcsStartComputeSystem")
    assert run.calls("SetInformationJobObject")[0]["args"] == [14, [[0, 1]]]
    assert result["limits_applied"]["cpu_affinity"] == "0x1"
    clean(run, host)


def test_cpus_map_to_processor_groups_by_their_active_counts_not_64_per_group():
    assert processor_groups(0x1, (36, 36)) == ((0, 1),)
    assert processor_groups(1 << 40, (36, 36)) == ((1, 1 << 4),)  # CPU 40: bit 4 of group 1, not bit 40 of 0
    assert processor_groups(1 << 35 | 1 << 36, (36, 36)) == ((0, 1 << 35), (1, 1))
    assert processor_groups((1 << 72) - 1, (36, 36)) == ((0, (1 << 36) - 1), (1, (1 << 36) - 1))
    assert processor_groups(1 << 64 | 0b101, (64, 64)) == ((0, 0b101), (1, 1))
    assert processor_groups(0b1000, (3, 5, 1)) == ((1, 1),)


def test_a_cpu_beyond_the_host_s_groups_is_refused_naming_it():
    with pytest.raises(LaunchError, match=r"names CPU 72; this host has CPUs 0 to 71 in 2 processor groups of 36, 36"):
        processor_groups(1 << 72 | 1, (36, 36))


def _two_groups_of_one(monkeypatch, build: int) -> None:
    # Group 0 holds CPU 0 and group 1 CPU 1: the simulator pins group 1's bit 0 to Linux CPU 1.
    monkeypatch.setenv("NSPAWN_HCS_SIM_GROUPS", "1,1")
    monkeypatch.setenv("NSPAWN_HCS_SIM_BUILD", str(build))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0),
                    reason="needs CPUs 0 and 1")
def test_cpu_1_of_a_host_of_two_one_cpu_groups_is_set_as_group_1(host, monkeypatch):
    _two_groups_of_one(monkeypatch, 20348)
    host.script("cpus.sh", "grep Cpus_allowed_list /proc/self/status\n")
    run = host.run("--json", process_executable="cpus.sh", cpu_affinity_hex="0x2")
    assert run.returncode == 0, run.stderr
    assert run.calls("SetInformationJobObject")[0]["args"] == [14, [[1, 1]]]
    assert run.stdout.splitlines()[0].split() == ["Cpus_allowed_list:", "1"]
    clean(run, host)


@pytest.mark.parametrize("mask", ["0x2", "0x3"], ids=["group 1", "groups 0 and 1"])
def test_before_ws2022_a_mask_outside_group_0_is_refused_before_anything_is_made(host, monkeypatch, mask):
    _two_groups_of_one(monkeypatch, 17763)
    host.script("true.sh", "exit 0\n")
    run = host.run(process_executable="true.sh", cpu_affinity_hex=mask)
    assert run.returncode == 125, run.stderr
    assert "Windows build 17763 pins a container to group 0 only" in run.stderr
    assert "needs Windows Server 2022" in run.stderr
    assert run.calls("SetInformationJobObject") == [] and run.calls("HcsCreateComputeSystem") == []
    clean(run, host)


def test_before_ws2022_a_mask_in_group_0_still_pins(host, monkeypatch):
    _two_groups_of_one(monkeypatch, 17763)
    host.script("true.sh", "exit 0\n")
    run = host.run(process_executable="true.sh", cpu_affinity_hex="0x1")
    assert run.returncode == 0, run.stderr
    assert run.calls("SetInformationJobObject")[0]["args"] == [14, [[0, 1]]]
    clean(run, host)


@pytest.mark.parametrize("isolation", ["process", "hyperv"])
def test_the_json_result_says_which_limits_hold(host, isolation):
    host.script("ok.sh", "exit 0\n")
    run = host.run("--json", process_executable="ok.sh", isolation=isolation, max_ram_mb=512, cpus_count=1,
                   max_processes=10, max_storage_iops=100)
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["limits_applied"]["max_ram_mb"] == "512 MB"
    assert result["limits_applied"]["max_storage_iops"] == 100
    assert "max_processes" in result["limits_not_enforced"]
    assert ("cpus_count" in result["limits_not_enforced"]) == (isolation == "process")
    assert ("cpus_count" in result["limits_applied"]) == (isolation == "hyperv")
    assert any("max_processes is not enforced" in line for line in run.errors)
    clean(run, host)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_run_reports_its_limits_from_the_table_doctor_prints(host, api):
    """What a run reports applied or not enforced is, field by field, what doctor says."""
    from nspawn.backends.hcs.enforcement import verdict

    host.script("ok.sh", "exit 0\n")
    limits = {"max_ram_mb": 64, "cpus_count": 1, "max_cpu_percent": 25, "cpu_affinity_hex": "0x1", "max_processes": 5}
    run = host.run("--json", process_executable="ok.sh", hcs_api=api, **limits)
    result = json.loads(run.stdout.splitlines()[-1])
    asked = {"max_ram_mb": 64, "cpus_count": 1, "max_cpu_percent": 25, "cpu_affinity": 1, "max_processes": 5}
    for field in asked:
        enforced, why = verdict(field, "process", asked)
        assert (field in result["limits_applied"]) == enforced
        assert result["limits_not_enforced"].get(field) == (None if enforced else why)
    [document] = run.documents("HcsCreateComputeSystem", 1 if api == "v2" else -1)
    assert "ProcessorCount" not in document and "Count" not in document.get("Container", {}).get("Processor", {})
    clean(run, host)


@APIS
def test_mapped_host_paths_reach_hcs_with_their_symbolic_links_resolved(host, api):
    link = host.tmp / "link"
    link.symlink_to(host.job, target_is_directory=True)
    host.script("ok.sh", "exit 0\n")
    data = host.tmp / "data"
    data.mkdir()
    (host.tmp / "data-link").symlink_to(data, target_is_directory=True)
    run = host.run(process_executable="ok.sh", hcs_api=api, process_directory=str(link),
                   mounts=[{"host_path": str(host.tmp / "data-link"), "container_path": "C:\\data"}])
    assert run.returncode == 0, run.stderr
    [document] = run.documents("HcsCreateComputeSystem", 1 if api == "v2" else -1)
    mapped = (document["Container"] if api == "v2" else document)["MappedDirectories"]
    assert [m["HostPath"] for m in mapped] == [str(host.job.resolve()), str(data.resolve())]
    clean(run, host)


def test_nat_on_v2_puts_an_hcn_endpoint_in_a_namespace_and_removes_both(host):
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh", network="nat", hcs_api="v2")
    assert run.returncode == 0, run.stderr
    (endpoint_id, settings), = [c["args"] for c in run.calls("HcnCreateEndpoint")]
    (namespace_id, _), = [c["args"] for c in run.calls("HcnCreateNamespace")]
    (doc,) = run.documents("computecore!HcsCreateComputeSystem")
    assert doc["Container"]["Networking"]["Namespace"] == namespace_id
    assert json.loads(run.calls("HcnModifyNamespace")[0]["args"][0])["Settings"]["EndpointId"] == endpoint_id
    assert run.calls("HcnDeleteNamespace")[0]["args"] == [namespace_id]
    assert run.calls("HcnDeleteEndpoint")[0]["args"] == [endpoint_id]
    clean(run, host)


def test_nat_on_v1_attaches_an_hns_endpoint_through_the_endpoint_list(host):
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh", network="nat", hcs_api="v1")
    assert run.returncode == 0, run.stderr
    (doc,) = run.documents("vmcompute!HcsCreateComputeSystem")
    (endpoint_id,) = doc["EndpointList"]
    calls = [c["args"][:2] for c in run.calls("HNSCall")]
    assert ["POST", "/endpoints/"] in calls and ["DELETE", f"/endpoints/{endpoint_id}"] in calls
    clean(run, host)


def test_the_dry_run_reads_the_chain_and_makes_nothing(host):
    host.script("ok.sh", "exit 0\n")
    run = host.run("--dry-run", process_executable="ok.sh")
    plan = json.loads(run.stdout)
    assert plan["layers"]["chain"] == [str(host.parent), str(host.base)]
    assert [layer["Path"] for layer in plan["v2"]["compute_system"]["Container"]["Storage"]["Layers"]] == \
        [str(host.parent), str(host.base)]
    assert run.ledger == {}  # the simulator was not even loaded
    assert host.scratch_folders() == []


# nspawn.run in a fresh interpreter (the simulator's own), printing what its listener heard.
LISTENED = """
import json, sys
import nspawn
from nspawn.config.resolve import load_config
heard = []
result = nspawn.run(load_config(sys.argv[1], host=True), listener=lambda event, details: heard.append([event, details]))
print(json.dumps({"exit_code": result.exit_code, "error": result.error, "heard": heard}))
"""


def listened(host, **doc) -> dict:
    ran = subprocess.run([sys.executable, "-c", LISTENED, str(host.config(**doc))], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, **host.env(None)}, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.splitlines()[-1])


@APIS
def test_the_container_process_is_announced_once_it_exists(host, api):
    host.script("pid.sh", "echo $$ > pid\n")
    run = listened(host, process_executable="pid.sh", hcs_api=api)
    assert (run["exit_code"], run["error"]) == (0, None)
    heard = run["heard"]
    announced = [details for event, details in heard if event == contract.PROCESS]
    assert announced == [{"what": "container process", "pid": int((host.job / "pid").read_text())}]
    phases = [details["phase"] for event, details in heard if event == contract.PHASE]
    at = heard.index([contract.PROCESS, announced[0]])
    assert heard.index([contract.PHASE, {"phase": "run"}]) < at < heard.index([contract.PHASE, {"phase": "teardown"}])
    assert phases[-1] == "rollback"


def test_a_hyperv_container_process_is_not_announced_its_pid_is_the_utility_vm_s(host):
    host.script("ok.sh", "exit 0\n")
    run = listened(host, process_executable="ok.sh", isolation="hyperv")
    assert run["exit_code"] == 0 and not [event for event, _ in run["heard"] if event == contract.PROCESS]
