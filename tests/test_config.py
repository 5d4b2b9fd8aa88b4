"""Config files field by field: what is accepted, what it means, and how errors read."""

import json
import os
import subprocess
import sys

import pytest

from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError

ORIGINAL = os.path.join(os.path.dirname(__file__), "..", "configs", "hostcompute_nspawn.json")


def write(tmp_path, content, name="c.json"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def problems(tmp_path, document, **kw):
    text = document if isinstance(document, (str, bytes)) else json.dumps(document, indent=1)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), **kw)
    return [str(p) for p in info.value.problems], info.value


def test_the_original_example_means_what_it_meant():
    config = load_config(ORIGINAL)
    assert config.backend == "hcs" and config.flavour == "windows"
    assert config.process_directory == "C:\\projects\\hostcompute_nspawn\\build\\bin"
    assert config.mapped_directory == "c:\\nspawndir"
    assert config.process_executable == "hello.exe"
    assert config.process_arguments == ("foo", "bar", "baz")
    assert config.stdout_filename == "nspawn_out.txt"
    assert config.limits.max_ram_mb == 512 and config.limits.cpus_count == 1
    assert config.parent_layer_directory.endswith("windowsfilter\\4620a187e5bb15ae117ff046006df40839fa554f9308eedd1dc35c55acf397ea")


@pytest.mark.parametrize("value, mask", [(3, 0b11), ("0x3", 0b11), ("0XfF", 255), (1 << 70, 1 << 70),
                                         ("0x" + "f" * 32, (1 << 128) - 1)])
def test_affinity_is_an_integer_mask_or_hex_string_of_any_width(tmp_path, value, mask):
    config = load_config(write(tmp_path, json.dumps({"process_executable": "/bin/true", "cpu_affinity_hex": value})))
    assert config.limits.cpu_affinity == mask


@pytest.mark.parametrize("field, value, expected", [
    ("max_ram_mb", -1, "expected a value ≥ 0"),
    ("max_ram_mb", 1.5, "expected a whole number"),
    ("max_ram_mb", "512", "expected a whole number"),
    ("cpus_count", 70000, "expected a value ≤ 65535"),
    ("max_cpu_percent", 101, "expected a value ≤ 100"),
    ("max_storage_iops", True, "expected a whole number"),
    ("max_storage_bandwidth_bytes_per_sec", 10**30, "expected a value ≤"),
    ("max_processes", -5, "expected a value ≥ 0"),
    ("cpu_affinity_hex", "12", 'a "0x…" hex string'),
    ("cpu_affinity_hex", -1, 'a "0x…" hex string'),
    ("process_arguments", "foo", "expected an array"),
    ("process_arguments", [1], "expected a string"),
    ("network", "bridge", "one of"),
    ("ports", ["8080"], "expected [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp], such as 8080:80"),
    ("ports", "8080:80", "expected an array"),
    ("isolation", "vm", "one of"),
    ("backend", "docker", "one of"),
    ("hcs_api", "v3", "one of"),
    ("hostname", "not_valid", "a host name"),
    ("hostname", "a" * 64, "at most 63"),
    ("timeout_seconds", -1, "expected a value ≥ 0"),
    ("stop_grace_seconds", "10", "expected a number"),
    ("environment", {"A=B": "x"}, "without '='"),
    ("environment", {"A": 1}, "expected a string"),
    ("mapped_directory_read_only", "yes", "true or false"),
    ("mounts", [{"host_path": "/a"}], 'required key "container_path"'),
    ("mounts", [{"host_path": "/a", "container_path": "/b", "ro": True}], "unknown key"),
    ("process_executable", "", "a non-empty string"),
    # issue 11: a NUL would end the string where a system call reads it (was an internal error, 125)
    ("process_executable", "/bin/tr\0ue", "text without NUL characters"),
    ("process_directory", "/tmp\0/x", "text without NUL characters"),
    ("process_arguments", ["a\0b"], "text without NUL characters"),
    ("environment", {"A": "a\0b"}, "text without NUL characters"),
    ("mounts", [{"host_path": "/a\0", "container_path": "/b"}], "text without NUL characters"),
    ("stdout_filename", "o\0ut", "text without NUL characters"),
])
def test_each_field_is_checked_and_the_error_names_it(tmp_path, field, value, expected):
    document = {"process_executable": "/bin/true", "process_directory": "/tmp", field: value}
    found, error = problems(tmp_path, document)
    assert error.exit_code == 2
    assert any(expected in p for p in found), found
    line = next(p for p in found if expected in p)
    assert f"$.{field}" in line and ":" in line.split(" ")[0]


def test_errors_carry_file_line_and_column(tmp_path):
    text = '{\n  "process_executable": "/bin/true",\n  "max_ram_mb": -1\n}'
    found, _ = problems(tmp_path, text)
    assert found == [f"{tmp_path / 'c.json'}:3:17: $.max_ram_mb: found -1; expected a value ≥ 0"]


def test_every_problem_is_reported_at_once(tmp_path):
    found, _ = problems(tmp_path, {"process_executable": "x", "max_ram_mb": -1, "cpus_count": "2", "netwrk": "none"})
    assert len(found) == 3


def test_unknown_key_gets_a_did_you_mean(tmp_path):
    found, _ = problems(tmp_path, {"process_executable": "/bin/true", "max_ram_mbs": 5})
    assert found[0].endswith('$.max_ram_mbs: unknown key; did you mean "max_ram_mb"?')


@pytest.mark.parametrize("content, expected", [
    (b"", "the file is empty"),
    (b"   \n", "the file is empty"),
    (b"{not json", "not valid JSON"),
    (b'{"process_executable": "x"', "not valid JSON"),
    (b"\xff\xfe{}", "is not UTF-8"),
    (b'{"process_executable": "\xc3"}', "is not UTF-8"),
    (b"[]", "expected a JSON object"),
    (b'"just a string"', "expected a JSON object"),
    (b"[" * 10000 + b"]" * 10000, "nested too deeply"),
    (b'{"process_executable": "x", "max_ram_mb": 1e400}', "too large"),
    (b'{"process_executable": "x", "max_ram_mb": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"process_executable": "x", "max_ram_mb": NaN}', "not valid JSON"),
    (b'{"process_executable": "x", "process_executable": "y"}', "duplicate key"),
])
def test_bad_input_is_one_clear_error_never_a_traceback(tmp_path, content, expected):
    found, error = problems(tmp_path, content)
    assert error.exit_code == 2
    assert any(expected in p for p in found), found


def test_duplicate_key_points_at_the_second_one(tmp_path):
    found, _ = problems(tmp_path, '{"process_executable": "x",\n "process_executable": "y"}')
    assert found == [f"{tmp_path / 'c.json'}:2:2: $.process_executable: duplicate key (first given on line 1); expected each key once"]


def test_a_utf8_bom_is_accepted(tmp_path):
    assert load_config(write(tmp_path, b'\xef\xbb\xbf{"process_executable": "/bin/true"}')).process_executable == "/bin/true"


def test_host_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "work").mkdir()
    config = load_config(write(tmp_path, json.dumps({"process_directory": "work", "process_executable": "run.sh"})))
    assert config.process_directory == str(tmp_path / "work")
    assert config.mapped_directory == str(tmp_path / "work")  # mapped at the same path by default


@pytest.mark.parametrize("document, expected", [
    ({"process_directory": "/w", "process_executable": "../x"}, "leaves the mapped directory"),
    ({"process_directory": "/w", "process_executable": "a/../../x"}, "leaves the mapped directory"),
    ({"process_directory": "/w", "process_executable": "x", "stdout_filename": "../out"}, "leaves the mapped directory"),
    ({"process_directory": "/w", "process_executable": "x", "stdout_filename": "/abs/out"}, "leaves the mapped directory"),
    ({"process_directory": "/w", "mapped_directory": "relative", "process_executable": "x"}, "expected an absolute path"),
    ({"process_directory": "/w", "mapped_directory": "/proc", "process_executable": "x"}, "cover the container's /proc"),
    ({"process_directory": "/w", "mapped_directory": "/sys/fs", "process_executable": "x"}, "cover the container's /sys"),
    ({"process_directory": "/w", "mapped_directory": "/", "process_executable": "x"}, "cover the container's /"),
    ({"process_executable": "x", "mounts": [{"host_path": "/a", "container_path": "/m"}, {"host_path": "/b", "container_path": "/m/"}]}, "already mapped by $.mounts[0]"),
    ({"process_directory": "/w", "mapped_directory": "/m", "process_executable": "x", "mounts": [{"host_path": "/a", "container_path": "/m"}]}, "already mapped by $.mapped_directory"),
    ({"process_executable": "x", "working_directory": "here"}, "expected an absolute path"),
    ({"process_executable": "bin/x"}, "without a process_directory"),
    ({"process_executable": "x", "ports": ["8080:80"]}, "found published ports with network 'none'; expected network 'nat'"),
    ({"process_executable": "x", "network": "nat", "ports": ["8080:80", "99999:1"]}, "port 99999 is out of range"),
    ({"process_executable": "x", "network": "nat", "ports": ["8080:80", "127.0.0.1:8080:81"]}, "publishes the host port of ports[0] again"),
    ({"process_executable": "x", "isolation": "hyperv"}, "does not offer"),
    ({"process_executable": "C:/x.exe", "process_directory": "C:/w", "network": "host"}, "cannot share the host's network"),
    ({"process_executable": "x.exe", "process_directory": "work", "mapped_directory": "C:/w"}, "expected an absolute Windows path"),
    ({"process_executable": "x.exe", "process_directory": "C:/w", "mapped_directory": "C:/"}, "drive root"),
    ({"process_executable": "x.exe", "process_directory": "C:/w", "environment": {"Path": "a", "PATH": "b"}}, "Windows ignores case"),
    ({"mapped_directory": "/m", "process_executable": "x"}, 'expected "process_directory" too'),
    ({"process_executable": "C:/x.exe", "parent_layer_directory": "C:/l/base", "max_ram_mb": 6}, "expected at least 8 with the hcs backend"),
])
def test_file_checks_a_schema_cannot_express(tmp_path, document, expected):
    found, error = problems(tmp_path, document)
    assert error.exit_code == 2
    assert any(expected in p for p in found), found


def test_windows_config_paths_use_backslashes_like_the_original(tmp_path):
    config = load_config(write(tmp_path, json.dumps({"parent_layer_directory": "C:/l", "process_directory": "C:/a/b", "mapped_directory": "C:/m/n",
                                                     "process_executable": "bin/x.exe"})))
    assert (config.process_directory, config.mapped_directory, config.process_executable) == ("C:\\a\\b", "C:\\m\\n", "bin\\x.exe")


def test_semantic_errors_are_located_too(tmp_path):
    found, _ = problems(tmp_path, '{\n "process_directory": "/w",\n "process_executable": "../x"\n}')
    assert found[0].startswith(f"{tmp_path / 'c.json'}:3:24: $.process_executable:")


def test_more_cpus_than_the_affinity_names_is_refused_not_quietly_fewer(tmp_path):
    found, error = problems(tmp_path, {"process_executable": "/bin/true", "cpus_count": 2, "cpu_affinity_hex": "0x1"})
    assert error.exit_code == 2 and "$.cpus_count: found 2 with cpu_affinity_hex naming 1 CPU; expected at most 1" in found[0]
    assert load_config(write(tmp_path, json.dumps({"process_executable": "/bin/true", "cpus_count": 1, "cpu_affinity_hex": 6})))


def test_a_process_directory_without_a_drive_needs_a_mapped_directory(tmp_path, monkeypatch):
    # Under the simulator's seam a Windows config's host paths are this host's, with no drive
    # letter, as a UNC path has none on Windows: neither can appear at the same container path.
    monkeypatch.setenv("NSPAWN_HCS_LIBRARY", "/nonexistent/simulator.so")
    found, error = problems(tmp_path, {"backend": "hcs", "parent_layer_directory": str(tmp_path),
                                       "process_directory": str(tmp_path), "process_executable": "x.exe"})
    assert error.exit_code == 2 and "$.mapped_directory: missing; expected it" in found[0], found


@pytest.mark.parametrize("key", ["max_cpu_percent", "timeout_seconds", "stop_grace_seconds"])
def test_a_nan_from_the_command_line_is_refused(key):
    # The schema's bounds never catch NaN: every comparison with it is false.
    with pytest.raises(ConfigError) as info:
        load_config(None, {"process_executable": "/bin/true", key: float("nan")})
    assert info.value.exit_code == 2 and "expected a finite number" in str(info.value.problems[0])


def test_a_field_only_another_backend_reads_is_refused(tmp_path):
    found, error = problems(tmp_path, {"backend": "linux", "process_executable": "/bin/true", "hcs_api": "v2"})
    assert error.exit_code == 2 and "$.hcs_api: found 'v2', which only the hcs backend reads" in found[0]
    load_config(write(tmp_path, json.dumps({"backend": "linux", "process_executable": "/bin/true", "hcs_api": "auto"})))


def test_a_parsed_file_is_cached_by_its_bytes_and_reread_without_json(tmp_path):
    """A repeated run reads its config's parsed document from the cache (marshal, no json): the
    same document, a changed file parsed again, a cache file cut short parsed again, and with
    NSPAWN_NO_CACHE nothing is written. The run path imports no json, re, signal or enum
    (docs/performance.md: they cost a run milliseconds)."""
    document = {"process_executable": "/bin/true", "process_arguments": ["é", "a\tb"], "max_ram_mb": 64,
                "environment": {"A": "1"}, "mapped_directory_read_only": False, "process_directory": "/tmp"}
    path = write(tmp_path, json.dumps(document))
    first = load_config(path)
    cached = tmp_path / "cache" / "parsed"
    [entry] = cached.iterdir()
    assert load_config(path) == first and first.limits.max_ram_mb == 64 and first.process_arguments == ("é", "a\tb")
    entry.write_bytes(entry.read_bytes()[:5])  # a crash mid-write
    assert load_config(path) == first
    write(tmp_path, json.dumps({**document, "max_ram_mb": 65}))
    assert load_config(path).limits.max_ram_mb == 65 and len(list(cached.iterdir())) == 2
    code = ("import sys; from nspawn.config.resolve import load_config; import nspawn.launch, nspawn.runcmd, "
            "nspawn.backends.linux.runtime\nc = load_config(sys.argv[1])\n"
            "print(c.limits.max_ram_mb, [m for m in ('json', 're', 'signal', 'enum') if m in sys.modules])")
    ran = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=os.environ,
                         cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert ran.stdout == "65 []\n", ran.stderr


def test_no_cache_writes_no_parsed_document(tmp_path, monkeypatch):
    monkeypatch.setenv("NSPAWN_NO_CACHE", "1")
    load_config(write(tmp_path, '{"process_executable": "/bin/true"}'))
    assert not (tmp_path / "cache").exists()
