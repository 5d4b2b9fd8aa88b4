"""The field table is the one declaration of the config's keys: the checked-in schema, the
model, the builder and the README's config reference all follow it."""

import json
import os
import re

import pytest

from nspawn.config import fields
from nspawn.config.load import SCHEMA_PATH
from nspawn.config.resolve import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..")

# A value for every field, as a file gives it, and what the model then holds.
EVERY_FIELD = {
    "parent_layer_directory": ("/layers/root", "/layers/root"),
    "process_directory": ("/work/dir", "/work/dir"),
    "mapped_directory": ("/inside", "/inside"),
    "mapped_directory_read_only": (True, True),
    "process_executable": ("bin/tool", "bin/tool"),
    "process_arguments": (["-x", "y"], ("-x", "y")),
    "stdout_filename": ("out/log.txt", "out/log.txt"),
    "environment": ({"A": "1"}, {"A": "1"}),
    "working_directory": ("/inside/sub", "/inside/sub"),
    "hostname": ("box-1", "box-1"),
    "mounts": ([{"host_path": "/srv", "container_path": "/srv", "read_only": True}], None),
    "tmpfs": ([{"container_path": "/scratch", "size_mb": 64.0}], None),
    "seccomp": ("unconfined", "unconfined"),
    "user": ("root:staff", "root:staff"),  # root: allow_mknod below is refused for any other user
    "private_users": ("pick", "pick"),
    "resolv_conf": ("keep", "keep"),
    "timezone": ("keep", "keep"),
    "tty": ("never", "never"),
    "allow_mknod": (True, True),
    "host_view": ("full", "full"),
    "tmp_size_mb": (256.0, 256),
    "shm_size_mb": (0, 0),
    "scratch_size_mb": (512, 512),
    "network": ("host", "host"),
    "ports": ([], ()),  # published ports need network nat: tests/linux/test_nat*.py, tests/test_config.py
    "isolation": ("process", "process"),
    "backend": ("linux", "linux"),
    "hcs_api": ("auto", "auto"),  # a Linux config may not set another (the HCS tests set it)
    "timeout_seconds": (2.5, 2.5),
    "stop_grace_seconds": (3, 3),
    "max_ram_mb": (512.0, 512),
    "cpus_count": (1.0, 1),
    "cpu_affinity_hex": ("0x3", 3),
    "max_cpu_percent": (50, 50),
    "max_storage_iops": (100, 100),
    "max_storage_bandwidth_bytes_per_sec": (1e6, 1000000),
    "max_processes": (10.0, 10),
    "image": ("alpine:3", "alpine:3"),  # exclusive with parent_layer_directory: checked in a document of its own
}
# A field, and those it is refused beside: checked in a document of its own, without them. An
# image replaces the host's / (host_view) and is not id-mapped (private_users); so does a parent layer.
APART = {"image": ("parent_layer_directory", "host_view", "private_users"), "host_view": ("parent_layer_directory", "image")}


def test_the_checked_in_schema_is_the_one_the_table_generates():
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        assert f.read() == fields.schema_text(), "run: python -m nspawn.config.fields"


def test_the_example_covers_every_field():
    assert set(EVERY_FIELD) == set(fields.BY_KEY)


def test_every_field_reaches_the_model(tmp_path):
    path = tmp_path / "every.json"
    path.write_text(json.dumps({key: given for key, (given, _) in EVERY_FIELD.items() if key not in APART}))
    config = load_config(str(path))
    for key, excluded in APART.items():
        (tmp_path / key).write_text(json.dumps({k: given for k, (given, _) in EVERY_FIELD.items() if k not in excluded}))
        assert getattr(load_config(str(tmp_path / key)), key) == EVERY_FIELD[key][1]
    for field in fields.FIELDS:
        if field.key in APART:
            continue
        held = getattr(config.limits if field.limit else config, field.name)
        expected = EVERY_FIELD[field.key][1]
        if field.items:
            assert [m._asdict() for m in held] == EVERY_FIELD[field.key][0]
        elif isinstance(expected, dict):
            assert dict(held) == expected
        else:
            assert held == expected and type(held) is type(expected), field.key


def test_whole_numbers_written_with_a_fraction_part_become_ints(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"process_executable": "/bin/true", "max_ram_mb": 512.0, "cpu_affinity_hex": 1.0}))
    limits = load_config(str(path)).limits
    assert (limits.max_ram_mb, limits.cpu_affinity) == (512, 1)
    assert type(limits.max_ram_mb) is int and type(limits.cpu_affinity) is int


def test_every_field_is_in_the_readme_config_reference():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    reference = readme.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_$]+)` \|", reference, re.MULTILINE))
    assert listed == set(fields.BY_KEY) | {"$schema"}


@pytest.mark.parametrize("field", [f for f in fields.FIELDS if f.additive], ids=lambda f: f.key)
def test_additive_fields_are_collections(field):
    assert field.schema["type"] in ("array", "object")
