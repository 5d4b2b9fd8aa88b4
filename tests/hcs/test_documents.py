"""The HCS documents nspawn builds against JSON Schemas (schemas/) written from Microsoft's HCS
schema reference and hcsshim's schema1/schema2 types: field names, types, units and ranges, for
the example configs (through `nspawn run --dry-run`) and for generated configs (directly from
documents.py, and through the plan)."""

from __future__ import annotations

import copy
import itertools
import json
import ntpath
import pathlib
import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from nspawn import hostfacts
from nspawn.backends import hcs
from nspawn.backends.hcs import documents
from nspawn.backends.hcs.layers import utility_vm_image
from nspawn.config.model import Limits
from nspawn.config.resolve import load_config
from tests.conftest import ROOT, nspawn

SCHEMAS = pathlib.Path(__file__).parent / "schemas"
KINDS = ("v2_compute_system", "v2_process", "v1_compute_system", "v1_process")


def _validators() -> dict[str, Draft202012Validator]:
    resources = [Resource.from_contents(json.loads(p.read_text())) for p in SCHEMAS.glob("*.schema.json")]
    registry = Registry().with_resources((r.id(), r) for r in resources)
    return {kind: Draft202012Validator({"$ref": f"urn:nspawn:test:hcs:{kind}"}, registry=registry)
            for kind in KINDS}


VALIDATORS = _validators()


def errors(kind: str, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATORS[kind].iter_errors(document)]


def layer_guid(folder: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ntpath.basename(folder)))


def run_time_storage(config, container_id: str) -> documents.Storage:
    """What the layer calls would hand over: the parent, then a base layer below it."""
    parent = config.parent_layer_directory
    base = ntpath.join(ntpath.dirname(parent), "base")
    return documents.Storage(
        scratch_folder=ntpath.join(ntpath.dirname(parent), container_id),
        volume_path="\\\\?\\Volume{3f2504e0-4f89-11d3-9a0c-0305e82c3301}\\",
        layers=((layer_guid(parent), parent), (layer_guid(base), base)),
    )


CONTAINER_ID = "nspawn-20260101-000000-0123abcd"


def built(config, namespace: str | None = "0d3b1c55-5a1e-4b8e-9c61-2f2e1d0c9b7a",
          endpoint: str = "C84A5E4B-6A3B-4F41-9C8D-6E1B2A3C4D5E") -> dict[str, dict]:
    """The four documents of a run, as execute would send them."""
    plan = hcs.plan(config)
    storage = run_time_storage(config, CONTAINER_ID)
    nat = config.network == "nat"
    utility_vm = utility_vm_image([path for _, path in storage.layers]) if config.isolation == "hyperv" else None
    return {
        "v2_compute_system": documents.v2_compute_system(plan, storage, namespace if nat else None),
        "v2_process": documents.process(plan),
        "v1_compute_system": documents.v1_compute_system(plan, CONTAINER_ID, storage, [endpoint] if nat else [],
                                                         utility_vm),
        "v1_process": documents.process(plan),
    }


# A dry run shows what is known only at run time as "<…>" placeholders.  These are the only
# places they may stand, each with the kind of value that replaces it.
_GUID_KEYS = {"Id", "ID", "Namespace", "EndpointList", "HostComputeNetwork", "VirtualNetwork"}  # the last two: endpoints
_PLACEHOLDER = re.compile(r"<[^<>]*>")


def fill_placeholders(document, key: str | None = None):
    """The document with each placeholder replaced by a value of its kind; fails on a
    placeholder where no run-time value belongs."""
    if isinstance(document, dict):
        # The command line and environment are the user's text, where "<…>" may stand as is.
        return {k: v if k in ("CommandLine", "Environment") else fill_placeholders(v, k) for k, v in document.items()}
    if isinstance(document, list):
        return [fill_placeholders(v, key) for v in document]
    if not isinstance(document, str) or not _PLACEHOLDER.search(document):
        return document
    if hcs.RUN_TIME_ID in document:
        assert key in ("Name", "LayerFolderPath", "compute_system_id", "scratch"), f"placeholder in {key}: {document}"
        return document.replace(hcs.RUN_TIME_ID, CONTAINER_ID)
    if key in _GUID_KEYS or "{<" in document:
        assert key in _GUID_KEYS | {"Path", "VolumePath"}, f"placeholder in {key}: {document}"
        return _PLACEHOLDER.sub(str(uuid.uuid4()), document)
    assert key in ("Path", "ImagePath"), f"placeholder in {key}: {document}"
    return _PLACEHOLDER.sub("C:\\\\ProgramData\\\\docker\\\\windowsfilter\\\\base", document)


def plan_documents(plan_json: dict) -> dict[str, dict]:
    """The documents a plan offers (a generation it will not take shows None)."""
    filled = fill_placeholders(plan_json)
    return {f"{api}_{what}": filled[api][what] for api in ("v2", "v1") for what in ("compute_system", "process")
            if filled[api][what] is not None}


def assert_valid(docs: dict[str, dict]) -> None:
    found = {kind: errors(kind, doc) for kind, doc in docs.items()}
    assert not any(found.values()), found


# --- the schemas themselves ----------------------------------------------------------------

def original(**changes):
    config = load_config(str(pathlib.Path(ROOT, "configs", "hostcompute_nspawn.json")))
    return config.replace(**changes) if changes else config


def test_the_schemas_are_valid_draft_2020_12():
    for path in SCHEMAS.glob("*.schema.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def _broken(doc: dict, path: str, value) -> dict:
    """doc with the value at a /-separated path replaced (or, with value ..., removed)."""
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    target = doc
    for p in parents:
        target = target[p]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return doc


BROKEN = [
    ("v2_compute_system", "Container/Processor", {"Count": 1, "Maximum": 2500}),  # mutually exclusive
    ("v2_compute_system", "Container/Processor", {"Maximum": 10001}),
    ("v2_compute_system", "Container/Processor", {"Maximum": 0}),
    ("v2_compute_system", "Container/Memory", {"SizeInMB": "512"}),
    ("v2_compute_system", "Container/Memory", {"SizeInBytes": 512}),
    ("v2_compute_system", "Container/Storage/Path", "\\\\?\\Volume{3f2504e0-4f89-11d3-9a0c-0305e82c3301}"),
    ("v2_compute_system", "Container/Storage/Layers/0/Id", "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"),
    ("v2_compute_system", "Container/Storage/Layers", []),
    ("v2_compute_system", "Container/MappedDirectories/0/HostPath", "C:/projects/bin"),
    ("v2_compute_system", "Container/MappedDirectories/0/ContainerPath", "nspawndir"),
    ("v2_compute_system", "Container/MappedDirectories/0/IOPSMaximum", 5),  # v1 only
    ("v2_compute_system", "Container/Networking", {"Namespace": "not-a-guid"}),
    ("v2_compute_system", "Container/Storage/QoS", {"IopsMaximum": 2**31}),  # int32 in hcsshim
    ("v2_compute_system", "Container/GuestOs", {"HostName": "1234"}),  # Windows refuses digits only
    ("v2_compute_system", "Container/RegistryChanges/AddValues/0/DWordValue", 1),  # two values
    ("v2_compute_system", "Container/Unknown", {}),
    ("v2_compute_system", "SchemaVersion", {"Major": 1, "Minor": 0}),
    ("v2_compute_system", "Container", ...),
    ("v2_compute_system", "HostingSystemId", "uvm"),  # only with HostedSystem
    ("v1_compute_system", "VolumePath", "\\\\?\\Volume{3f2504e0-4f89-11d3-9a0c-0305e82c3301}\\"),
    ("v1_compute_system", "VolumePath", ...),
    ("v1_compute_system", "HvPartition", True),  # no HvRuntime
    ("v1_compute_system", "HvRuntime", {"ImagePath": "C:\\layers\\base\\UtilityVM"}),  # not Hyper-V
    ("v1_compute_system", "ProcessorMaximum", 10001),
    ("v1_compute_system", "MemoryMaximumInMB", 0),
    ("v1_compute_system", "SystemType", "VirtualMachine"),
    ("v1_compute_system", "Layers/0/Id", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),  # v1 spells it ID
    ("v1_compute_system", "EndpointList", ["nat"]),
    ("v1_compute_system", "StorageIOPSMaximum", -1),
    ("v1_compute_system", "Containers", []),
    ("v2_process", "CommandLine", ""),
    ("v2_process", "WorkingDirectory", "/work"),
    ("v2_process", "Environment", {"A=B": "c"}),
    ("v2_process", "ConsoleSize", [25, 80, 1]),
    ("v2_process", "CreateInUtilityVm", False),  # v1 only
    ("v1_process", "StdOut", True),
]


@pytest.mark.parametrize("kind,path,value", BROKEN, ids=[f"{k}:{p}={v!r}" for k, p, v in BROKEN])
def test_a_schema_rejects_a_broken_document(kind, path, value):
    good = built(original(network="nat", mounts=()))[kind]
    assert errors(kind, good) == []
    assert errors(kind, _broken(good, path, value)), f"{kind} accepted {path}={value!r}"


def test_a_hyperv_v1_document_needs_the_utility_vm_and_no_volume():
    doc = built(original(isolation="hyperv"))["v1_compute_system"]
    assert errors("v1_compute_system", doc) == []
    assert errors("v1_compute_system", {**doc, "VolumePath": "\\\\?\\Volume{3f2504e0-4f89-11d3-9a0c-0305e82c3301}"})
    assert errors("v1_compute_system", {**doc, "HvRuntime": {"ImagePath": "C:\\layers\\base\\Files"}})


# --- the example configs, through the CLI's dry run -------------------------------------------

WINDOWS_CONFIGS = ["configs/hostcompute_nspawn.json", "configs/windows-build.json"]
VARIANTS = [[], ["--isolation", "hyperv"], ["--network", "none"], ["--network", "nat", "--cpus", "2"],
            ["--hcs-api", "v1"]]


@pytest.mark.parametrize("path", WINDOWS_CONFIGS)
@pytest.mark.parametrize("extra", VARIANTS, ids=lambda v: " ".join(v) or "as written")
def test_the_dry_run_of_an_example_config_validates(path, extra):
    result = nspawn("run", "--dry-run", "-c", path, *extra)
    assert result.returncode == 0, result.stderr
    assert_valid(plan_documents(json.loads(result.stdout)))


def test_angle_brackets_in_the_users_command_are_text_not_placeholders():
    docs = plan_documents(hcs.plan(original(process_arguments=("<>", "<x>"), environment={"A": "<b>"})).to_json())
    assert_valid(docs)
    assert docs["v2_process"]["CommandLine"].endswith(" <> <x>") and docs["v1_process"]["Environment"] == {"A": "<b>"}


# --- the values carry the right units ---------------------------------------------------------

def test_memory_is_passed_in_megabytes():
    docs = built(original(limits=Limits(max_ram_mb=512)))
    assert docs["v2_compute_system"]["Container"]["Memory"] == {"SizeInMB": 512}
    assert docs["v1_compute_system"]["MemoryMaximumInMB"] == 512


@pytest.mark.parametrize("percent,maximum", [(25, 2500), (100, 10000), (0.5, 50), (0.001, 1), (33.335, 3334)])
def test_the_cpu_maximum_is_percent_times_100_within_1_to_10000(percent, maximum):
    docs = built(original(limits=Limits(max_cpu_percent=percent)))
    assert docs["v2_compute_system"]["Container"]["Processor"] == {"Maximum": maximum}
    assert docs["v1_compute_system"]["ProcessorMaximum"] == maximum


def test_storage_limits_pass_through_unchanged():
    docs = built(original(limits=Limits(max_storage_iops=2000, max_storage_bandwidth_bytes_per_sec=104857600)))
    assert docs["v2_compute_system"]["Container"]["Storage"]["QoS"] == {"IopsMaximum": 2000, "BandwidthMaximum": 104857600}
    v1 = docs["v1_compute_system"]
    assert (v1["StorageIOPSMaximum"], v1["StorageBandwidthMaximum"]) == (2000, 104857600)


def test_v1_caps_storage_for_the_container_only_as_v2_does_not_each_mapping_too():
    docs = built(original(limits=Limits(max_storage_iops=2000, max_storage_bandwidth_bytes_per_sec=104857600)))
    assert docs["v1_compute_system"]["MappedDirectories"]
    for mapping in docs["v1_compute_system"]["MappedDirectories"]:
        assert not {"IOPSMaximum", "BandwidthMaximum"} & mapping.keys()
    assert all(mapping.keys() == {"HostPath", "ContainerPath", "ReadOnly"}
               for mapping in docs["v2_compute_system"]["Container"]["MappedDirectories"])


def test_a_cpu_count_above_the_host_s_cpus_is_capped_and_says_so(monkeypatch):
    from nspawn import hostfacts

    monkeypatch.setattr(hostfacts, "cpu_count", lambda: 4)
    config = original(isolation="hyperv", limits=Limits(cpus_count=64))
    docs = built(config)
    assert docs["v1_compute_system"]["ProcessorCount"] == 4
    assert docs["v2_compute_system"]["Container"]["Processor"] == {"Count": 4}
    (limit,) = hcs.plan(config).limits
    assert (limit.field, limit.enforced, limit.detail) == ("cpus_count", True, "4 (capped at the host's 4 CPUs)")
    (limit,) = hcs.plan(config.replace(limits=Limits(cpus_count=3))).limits
    assert limit.detail == 3


@pytest.mark.parametrize("digits", [b"\x12\x34\x56\x78", b"\x00\x00\x00\x00"])
def test_a_generated_hostname_is_never_all_digits(monkeypatch, digits):
    answers = itertools.cycle([digits, b"\xab\x01\x02\x03"])
    monkeypatch.setattr(hcs.os, "urandom", lambda n: next(answers))
    plan = hcs.plan(original(hostname=None))
    assert plan.hostname == "ab010203"
    docs = built(original(hostname=None))
    assert not docs["v1_compute_system"]["HostName"].isdigit()
    assert not docs["v2_compute_system"]["Container"]["GuestOs"]["HostName"].isdigit()


def test_hostname_is_sent_only_when_the_plan_has_one():
    plan = hcs.plan(original())._replace(hostname="")
    storage = run_time_storage(original(), CONTAINER_ID)
    assert "GuestOs" not in documents.v2_compute_system(plan, storage, None)["Container"]
    assert "HostName" not in documents.v1_compute_system(plan, CONTAINER_ID, storage, [], None)


def test_limits_left_out_are_absent_not_zero():
    docs = built(original(limits=Limits()))
    container = docs["v2_compute_system"]["Container"]
    assert not {"Memory", "Processor"} & container.keys() and "QoS" not in container["Storage"]
    assert not {"MemoryMaximumInMB", "ProcessorCount", "ProcessorMaximum", "StorageIOPSMaximum",
                "StorageBandwidthMaximum"} & docs["v1_compute_system"].keys()


def test_the_volume_path_has_its_trailing_backslash_in_v2_only():
    docs = built(original())
    v2 = docs["v2_compute_system"]["Container"]["Storage"]["Path"]
    assert v2.endswith("}\\") and docs["v1_compute_system"]["VolumePath"] == v2[:-1]


def test_a_hyperv_document_boots_the_utility_vm_of_the_base_layer():
    config = original(isolation="hyperv")
    storage = run_time_storage(config, CONTAINER_ID)
    doc = built(config)["v1_compute_system"]
    base = storage.layers[-1][1]
    assert doc["HvPartition"] is True
    assert doc["HvRuntime"] == {"ImagePath": base + "\\UtilityVM"}
    assert doc["LayerFolderPath"] == storage.scratch_folder and "VolumePath" not in doc
    assert [layer["Path"] for layer in doc["Layers"]] == [config.parent_layer_directory, base]


def test_a_hyperv_plan_offers_no_process_isolated_v2_document():
    """A v2 document holding only `Container` makes a process-isolated container; Hyper-V in
    v2 needs a utility VM and a HostedSystem with HostingSystemId.
    A Hyper-V plan must not show (or let execute send) the process-isolated one."""
    shown = hcs.plan(original(isolation="hyperv")).to_json()["v2"]["compute_system"]
    assert shown is None or "HostingSystemId" in shown or "VirtualMachine" in shown, shown


# --- generated configs ------------------------------------------------------------------------

_name = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_- "),
                min_size=1, max_size=12).map(str.strip).filter(bool)
_windows_dir = st.lists(_name, min_size=1, max_size=3).map(lambda parts: "C:/" + "/".join(parts))
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: not s.isdigit())
_int32 = st.integers(0, 2**31 - 1)  # what validate accepts for the storage QoS (HCS's int32 fields)


@st.composite
def windows_configs(draw) -> dict:
    doc = {"parent_layer_directory": "C:/ProgramData/docker/windowsfilter/" + draw(st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True)),
           "process_executable": draw(st.sampled_from(["hello.exe", "bin/tool.exe", "C:/Windows/System32/cmd.exe"])),
           "process_arguments": draw(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8), max_size=4)),
           "environment": draw(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,7}", fullmatch=True),
                                               st.text(max_size=8).filter(lambda s: "\x00" not in s), max_size=3)),
           "network": draw(st.sampled_from(["none", "nat"])),
           "isolation": draw(st.sampled_from(["process", "hyperv"])),
           "max_ram_mb": draw(st.one_of(st.just(0), st.integers(8, 2**32 - 1))),  # HCS takes no less than 8
           "cpus_count": draw(st.integers(0, 65535)),
           "max_cpu_percent": draw(st.one_of(st.integers(0, 100), st.floats(0, 100))),
           "max_storage_iops": draw(_int32), "max_storage_bandwidth_bytes_per_sec": draw(_int32)}
    doc["hcs_api"] = draw(st.sampled_from(["auto", "v1"] + (["v2"] if doc["isolation"] == "process" else [])))
    if draw(st.booleans()):
        doc["process_directory"] = draw(_windows_dir)
        doc["mapped_directory_read_only"] = draw(st.booleans())
        if draw(st.booleans()):
            doc["mapped_directory"] = "C:/mapped/" + draw(_name)
        if draw(st.booleans()):
            doc["stdout_filename"] = draw(_name) + ".txt"
    else:
        doc["process_executable"] = "C:/Windows/System32/cmd.exe"
    for optional, strategy in (("hostname", _label), ("working_directory", _windows_dir)):
        if draw(st.booleans()):
            doc[optional] = draw(strategy)
    doc["mounts"] = [{"host_path": draw(_windows_dir), "container_path": f"C:/mounts/m{i}", "read_only": draw(st.booleans())}
                     for i in range(draw(st.integers(0, 2)))]
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(windows_configs())
def test_documents_of_generated_configs_validate_and_carry_theLimits(tmp_path, document):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    config = load_config(str(path))
    docs = built(config)
    assert_valid(docs)
    assert_valid(plan_documents(hcs.plan(config).to_json()))

    limits, v2, v1 = config.limits, docs["v2_compute_system"]["Container"], docs["v1_compute_system"]
    assert v2.get("Memory", {}).get("SizeInMB", 0) == v1.get("MemoryMaximumInMB", 0) == document["max_ram_mb"]
    assert v2["Storage"].get("QoS", {}).get("IopsMaximum", 0) == v1.get("StorageIOPSMaximum", 0) == document["max_storage_iops"]
    assert (v2["Storage"].get("QoS", {}).get("BandwidthMaximum", 0) == v1.get("StorageBandwidthMaximum", 0)
            == document["max_storage_bandwidth_bytes_per_sec"])
    if limits.max_cpu_percent:
        assert v2["Processor"] == {"Maximum": v1["ProcessorMaximum"]} and "ProcessorCount" not in v1
        assert abs(v1["ProcessorMaximum"] - limits.max_cpu_percent * 100) <= 0.5 or v1["ProcessorMaximum"] == 1
    else:
        count = min(limits.cpus_count, hostfacts.cpu_count())  # capped at the host's CPUs
        assert v2.get("Processor") == ({"Count": count} if count else None)
        assert v1.get("ProcessorCount") == (count or None) and "ProcessorMaximum" not in v1
    assert (v1["HvPartition"], "HvRuntime" in v1, "VolumePath" in v1) == (
        (True, True, False) if document["isolation"] == "hyperv" else (False, False, True))
    assert len(v2["MappedDirectories"]) == len(v1["MappedDirectories"]) == len(document["mounts"]) + ("process_directory" in document)
    assert ("Networking" in v2, bool(v1["EndpointList"])) == ((True, True) if document["network"] == "nat" else (False, False))


def test_one_processor_limit_per_document_in_both_schemas():
    """With both cpus_count and max_cpu_percent, v1 carries only ProcessorMaximum, as v2 carries
    only Processor.Maximum; the count is reported not enforced from the one table."""
    from nspawn.backends.hcs.enforcement import verdict

    config = original(limits=Limits(cpus_count=2, max_cpu_percent=50))
    docs = built(config)
    assert_valid(docs)
    assert docs["v2_compute_system"]["Container"]["Processor"] == {"Maximum": 5000}
    assert (docs["v1_compute_system"].get("ProcessorCount"), docs["v1_compute_system"]["ProcessorMaximum"]) == (None, 5000)
    assert errors("v1_compute_system", {**docs["v1_compute_system"], "ProcessorCount": 2})
    asked = config.limits.asked()
    for isolation in ("process", "hyperv"):
        enforced, why = verdict("cpus_count", isolation, asked)
        assert not enforced and "max_cpu_percent" in why
        assert verdict("max_cpu_percent", isolation, asked)[0]
    assert verdict("cpus_count", "hyperv", {"cpus_count": 2}) == (True, "the utility VM's virtual processors")


@pytest.mark.parametrize("user", ["ContainerUser", "ContainerAdministrator", "builder"])
def test_the_user_reaches_both_process_documents_and_the_dry_run(user):
    docs = built(original(user=user))
    assert_valid(docs)
    assert docs["v2_process"]["User"] == docs["v1_process"]["User"] == user
    result = nspawn("run", "--dry-run", "-c", WINDOWS_CONFIGS[0], "--user", user)
    assert result.returncode == 0, result.stderr
    shown = plan_documents(json.loads(result.stdout))
    assert shown["v2_process"]["User"] == shown["v1_process"]["User"] == user


def test_without_a_user_the_process_document_leaves_it_to_the_image():
    docs = built(original())
    assert "User" not in docs["v2_process"] and "User" not in docs["v1_process"]
