"""The HCS backend's validate and plan, pure: what validate refuses (and says where), that
whatever it accepts plans and prints, and that the plan holds the backend's decisions, with
the container id left to the run."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nspawn.backends import hcs
from nspawn.config.load import Finding
from nspawn.config.model import Limits
from nspawn.config.build import build_config
from nspawn.errors import ConfigError
from tests.conftest import ROOT

QUOTE_WHY = "a path without a double quote: a Windows command line cannot hold one in the program name"
HYPERV_V2 = ("found 'v2' with isolation 'hyperv'; expected 'v1' or 'auto': Hyper-V containers run through "
             "vmcompute.dll (HvPartition)")


def config_of(tmp_path: pathlib.Path, **doc):
    """The config as the file checks leave it, before the backend's own rules (validate, which
    load_config runs too)."""
    document = {"backend": "hcs", "parent_layer_directory": "C:\\layers\\parent", **doc}
    config, findings = build_config(document, str(tmp_path / "c.json"), str(tmp_path))
    if findings:
        raise ConfigError([])
    return config


# --- validate ------------------------------------------------------------------------------

@pytest.mark.parametrize("doc,key,value", [
    ({"process_executable": 'C:\\a"b.exe'}, "process_executable", 'C:\\a"b.exe'),
    ({"process_executable": 'a"b.exe', "process_directory": "C:\\job"}, "process_executable", 'a"b.exe'),
    ({"process_executable": "tool.exe", "process_directory": "C:\\job", "mapped_directory": 'C:\\a"b'},
     "mapped_directory", 'C:\\a"b'),
])
def test_a_double_quote_in_the_program_path_is_a_finding_naming_its_field(tmp_path, doc, key, value):
    config = config_of(tmp_path, **doc)
    assert hcs.validate(config) == [Finding((key,), f"found {value!r}; expected {QUOTE_WHY}")]


def test_a_quoted_mapped_directory_is_no_program_path_when_the_executable_is_absolute(tmp_path):
    config = config_of(tmp_path, process_executable="C:\\Windows\\System32\\cmd.exe", process_directory="C:\\job",
                       mapped_directory='C:\\a"b', process_arguments=['say "hi"'])
    assert hcs.validate(config) == []


@pytest.mark.parametrize("isolation,api,refused", [
    ("hyperv", "v2", True), ("hyperv", "v1", False), ("hyperv", "auto", False), ("process", "v2", False),
])
def test_hyperv_with_hcs_api_v2_is_refused(tmp_path, isolation, api, refused):
    config = config_of(tmp_path, process_executable="C:\\x.exe", isolation=isolation, hcs_api=api)
    assert hcs.validate(config) == ([Finding(("hcs_api",), HYPERV_V2)] if refused else [])


@pytest.mark.parametrize("field", ["max_storage_iops", "max_storage_bandwidth_bytes_per_sec"])
def test_storage_qos_above_int32_is_a_finding_naming_its_field(tmp_path, field):
    config = config_of(tmp_path, process_executable="C:\\x.exe", **{field: 2**31})
    assert hcs.validate(config) == [Finding((field,), f"found {2**31}; expected at most 2147483647: HCS holds it "
                                                      "in a 32-bit signed field")]
    assert hcs.validate(config_of(tmp_path, process_executable="C:\\x.exe", **{field: 2**31 - 1})) == []


def test_an_all_digit_hostname_is_a_finding(tmp_path):
    (finding,) = hcs.validate(config_of(tmp_path, process_executable="C:\\x.exe", hostname="1234"))
    assert finding.path == ("hostname",) and "digits only" in finding.message
    assert hcs.validate(config_of(tmp_path, process_executable="C:\\x.exe", hostname="h1234")) == []


_text = st.text(st.sampled_from('ab" \\/:.'), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(executable=_text, mapped=st.one_of(st.none(), _text.map(lambda s: "C:\\" + s)),
       arguments=st.lists(st.text(max_size=6), max_size=3), isolation=st.sampled_from(["process", "hyperv"]),
       api=st.sampled_from(["auto", "v1", "v2"]))
def test_whatever_validate_accepts_plans_and_prints(tmp_path, executable, mapped, arguments, isolation, api):
    doc = {"process_executable": executable, "process_arguments": arguments, "isolation": isolation, "hcs_api": api,
           "process_directory": "C:\\job"}
    if mapped is not None:
        doc["mapped_directory"] = mapped
    try:
        config = config_of(tmp_path, **doc)
    except ConfigError:
        return
    if not hcs.validate(config):
        json.dumps(hcs.plan(config).to_json())


def test_validate_imports_nothing_native():
    """Config loading calls it for every Windows config: importing the package loads no ctypes,
    no binding and none of the run's modules."""
    code = "import sys\nimport nspawn.backends.hcs\nprint(sorted(sys.modules))"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ran.returncode == 0, ran.stderr
    run_modules = ("ctypes", "json", "nspawn.backends.hcs.native", "nspawn.backends.hcs.generations",
                   "nspawn.backends.hcs.layers", "nspawn.backends.hcs.runtime", "nspawn.backends.hcs.documents")
    assert not set(eval(ran.stdout)) & set(run_modules)


# --- the plan ------------------------------------------------------------------------------

def test_the_plan_holds_the_command_line_directories_and_environment(tmp_path):
    config = config_of(tmp_path, process_executable="bin\\tool.exe", process_directory="C:\\job",
                       mapped_directory="C:\\work", mapped_directory_read_only=True, process_arguments=["a b", ""],
                       environment={"A": "1"}, stdout_filename="out.txt",
                       mounts=[{"host_path": "C:\\data", "container_path": "C:\\data", "read_only": False}])
    plan = hcs.plan(config)
    assert plan.argv == ("C:\\work\\bin\\tool.exe", "a b", "")
    assert plan.command_line == 'C:\\work\\bin\\tool.exe "a b" ""'
    assert plan.working_directory == "C:\\work"
    assert plan.environment == (("A", "1"),)
    assert plan.mapped_directories == (hcs.MappedDirectory("C:\\job", "C:\\work", True),
                                       hcs.MappedDirectory("C:\\data", "C:\\data", False))
    assert plan.stdout_file == "C:\\job\\out.txt"


def test_without_a_mapped_directory_the_process_starts_in_the_root(tmp_path):
    plan = hcs.plan(config_of(tmp_path, process_executable="C:\\x.exe"))
    assert (plan.working_directory, plan.mapped_directories, plan.stdout_file) == ("C:\\", (), None)


def test_the_plan_takes_one_processor_limit_and_says_what_windows_enforces(tmp_path):
    plan = hcs.plan(config_of(tmp_path, process_executable="C:\\x.exe", max_ram_mb=512, cpus_count=1,
                              max_cpu_percent=25, cpu_affinity_hex="0x1", max_processes=3))
    assert (plan.memory_mb, plan.processor, plan.cpu_affinity, plan.silo_affinity) == (512, ("Maximum", 2500), 1, 1)
    applied = {limit.field: limit.detail for limit in plan.limits if limit.enforced}
    assert applied == {"max_ram_mb": "512 MB", "max_cpu_percent": "2500 of 10000 processor cycles",
                       "cpu_affinity": "0x1"}
    assert {limit.field for limit in plan.limits if not limit.enforced} == {"cpus_count", "max_processes"}


def test_under_hyperv_the_plan_takes_v1_and_sets_no_silo_affinity(tmp_path):
    plan = hcs.plan(config_of(tmp_path, process_executable="C:\\x.exe", isolation="hyperv", cpu_affinity_hex="0x3"))
    assert (plan.api, plan.silo_affinity) == ("v1", 0)
    assert [(limit.field, limit.enforced) for limit in plan.limits] == [("cpu_affinity", False)]


def test_a_plan_is_a_record(tmp_path):
    plan = hcs.plan(config_of(tmp_path, process_executable="C:\\x.exe"))
    with pytest.raises(AttributeError):
        plan.hostname = "other"
    assert plan._replace(memory_mb=64).memory_mb == 64 and plan.memory_mb == 0


def test_the_dry_run_leaves_the_container_id_to_the_run(tmp_path):
    shown = hcs.plan(config_of(tmp_path, process_executable="C:\\x.exe")).to_json()
    assert shown["compute_system_id"] == shown["v1"]["compute_system"]["Name"] == hcs.RUN_TIME_ID
    assert shown["layers"]["scratch"] == shown["v1"]["compute_system"]["LayerFolderPath"] == \
        f"C:\\layers\\{hcs.RUN_TIME_ID}"
    assert "nspawn-" not in json.dumps(shown)


def test_limits_of_a_config_made_in_code_plan_too():
    from nspawn.config.model import Config

    config = Config(process_executable="C:\\x.exe", parent_layer_directory="C:\\layers\\parent", flavour="windows",
                    backend="hcs", limits=Limits(max_storage_iops=10))
    plan = hcs.plan(config)
    assert (plan.storage_iops, plan.limits) == (10, (hcs.Limit("max_storage_iops", True, 10),))


def test_a_user_with_a_group_is_a_finding_windows_names_have_no_colon(tmp_path):
    (finding,) = hcs.validate(config_of(tmp_path, process_executable="C:\\x.exe", user="ContainerUser:users"))
    assert finding.path == ("user",) and "expected a Windows user name" in finding.message
    assert hcs.validate(config_of(tmp_path, process_executable="C:\\x.exe", user="ContainerUser")) == []
    assert hcs.plan(config_of(tmp_path, process_executable="C:\\x.exe", user="ContainerUser")).user == "ContainerUser"
