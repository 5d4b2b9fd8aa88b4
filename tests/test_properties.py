"""Whatever bytes a config holds, `validate` answers 0 or 2 with messages, never a traceback."""

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from nspawn.config import fields
from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError

KEYS = [*fields.BY_KEY, "prcess_directory"]  # and a misspelt one
ITEM_KEYS = [f.key for f in fields.MOUNT_FIELDS]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                    st.sampled_from(["/w", "C:/w", "..", "../x", "x/../../y", "/proc", "0x3", "nat", "hyperv", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(KEYS + ITEM_KEYS), inner, max_size=3)),
                      max_leaves=8)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)

ORIGINAL = json.dumps({"process_directory": "C:/p", "process_executable": "hello.exe", "process_arguments": ["a"],
                       "max_ram_mb": 512, "cpus_count": 1, "mapped_directory": "c:/m", "stdout_filename": "o.txt",
                       "parent_layer_directory": "C:/l"}).encode()


def outcome(tmp_path, data: bytes) -> int:
    path = tmp_path / "c.json"
    path.write_bytes(data)
    try:
        load_config(str(path))
        return 0
    except ConfigError as e:
        assert e.problems and all(str(p).strip() for p in e.problems)
        return 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_random_documents(tmp_path, document):
    assert outcome(tmp_path, json.dumps(document).encode()) in (0, 2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_original(tmp_path, data):
    raw = bytearray(ORIGINAL)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            raw[where] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "delete":
            del raw[where]
        else:
            raw.insert(where, data.draw(st.integers(0, 255)))
    assert outcome(tmp_path, bytes(raw)) in (0, 2)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes(tmp_path, data):
    assert outcome(tmp_path, data) in (0, 2)
