"""Checks against the host, run before anything is touched."""

import json
import os

import pytest

from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX host paths")


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    exe = d / "run.sh"
    exe.write_text("#!/bin/sh\necho hi\n")
    exe.chmod(0o755)
    return d


def check(tmp_path, **document):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    return load_config(str(path), host=True)


def failure(tmp_path, **document):
    with pytest.raises(ConfigError) as info:
        check(tmp_path, **document)
    return info.value


def test_a_good_config_passes(tmp_path, work):
    config = check(tmp_path, process_directory="work", mapped_directory="/w", process_executable="run.sh")
    assert config.process_directory == str(work)


def test_missing_process_directory(tmp_path):
    error = failure(tmp_path, process_directory="nope", process_executable="x")
    assert "No such file or directory; expected an existing directory" in str(error)


def test_missing_executable_is_exit_127(tmp_path, work):
    error = failure(tmp_path, process_directory="work", process_executable="absent")
    assert error.exit_code == 127 and "was not found" in str(error)


def test_not_executable_is_exit_126(tmp_path, work):
    (work / "data.txt").write_text("x")
    error = failure(tmp_path, process_directory="work", process_executable="data.txt")
    assert error.exit_code == 126 and "not executable" in str(error)


def test_symlink_leaving_the_process_directory_is_refused(tmp_path, work):
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o755)
    (work / "link.sh").symlink_to(outside)
    error = failure(tmp_path, process_directory="work", process_executable="link.sh")
    assert "outside the process directory" in str(error)


def test_stdout_folder_must_exist_inside(tmp_path, work):
    error = failure(tmp_path, process_directory="work", process_executable="run.sh", stdout_filename="logs/out.txt")
    assert "$.stdout_filename" in str(error) and "does not exist" in str(error)


def test_absolute_executable_is_looked_up_in_the_container_root(tmp_path):
    assert check(tmp_path, process_executable="/bin/sh").process_executable == "/bin/sh"
    error = failure(tmp_path, process_executable="/no/such/binary")
    assert error.exit_code == 127


def test_command_name_is_searched_on_path(tmp_path):
    check(tmp_path, process_executable="sh")
    assert failure(tmp_path, process_executable="no-such-command-anywhere").exit_code == 127


def test_parent_layer_root_is_used_for_lookups(tmp_path):
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "usr").mkdir()
    (root / "usr" / "bin").symlink_to("/bin")  # absolute link: resolved inside the root, not on the host
    check(tmp_path, parent_layer_directory="rootfs", process_executable="/usr/bin/tool")
    assert failure(tmp_path, parent_layer_directory="rootfs", process_executable="/bin/sh").exit_code == 127


def test_affinity_must_name_cpus_the_host_has(tmp_path):
    cpus = os.cpu_count()
    check(tmp_path, process_executable="/bin/sh", cpu_affinity_hex=(1 << cpus) - 1)
    error = failure(tmp_path, process_executable="/bin/sh", cpu_affinity_hex=hex(1 << (cpus + 3)))
    assert f"CPU {cpus + 3}" in str(error) and "$.cpu_affinity_hex" in str(error)


def test_cpus_count_beyond_the_host(tmp_path):
    error = failure(tmp_path, process_executable="/bin/sh", cpus_count=os.cpu_count() + 1)
    assert "$.cpus_count" in str(error)


def test_a_windows_config_cannot_be_host_checked_here(tmp_path):
    error = failure(tmp_path, parent_layer_directory="C:/layers/base", process_directory="C:/w", process_executable="x.exe")
    assert "for a Windows host" in str(error)


def test_a_working_directory_missing_in_the_container_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"process_executable": "/bin/true", "working_directory": str(tmp_path / "nowhere")}, host=True)
    assert info.value.exit_code == 2
    assert "working_directory" in str(info.value.problems[0]) and "not a directory in the container" in str(info.value.problems[0])
    assert load_config(None, {"process_executable": "/bin/true", "working_directory": str(tmp_path)}, host=True)


def _refused(overrides):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"process_executable": "/bin/true", **overrides}, host=True)
    return info.value


def test_a_linux_run_without_root_is_refused_before_anything_is_made(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    error = _refused({"backend": "linux"})
    assert error.exit_code == 126
    assert "the linux backend needs root: it makes namespaces, mounts and cgroups" in str(error.problems[0])


@pytest.mark.parametrize("host_path, container_path, found", [
    ("/etc/hostname", "/usr/share", "/etc/hostname is a file and /usr/share is a directory in the container"),
    ("/usr", "/etc/hostname", "/usr is a directory and /etc/hostname is a file in the container"),
])
def test_a_bind_of_the_wrong_kind_is_a_config_error(host_path, container_path, found):
    error = _refused({"mounts": [{"host_path": host_path, "container_path": container_path}]})
    assert error.exit_code == 2 and "$.mounts[0].container_path: " + found in str(error.problems[0])


def test_a_bind_of_the_same_kind_or_onto_nothing_is_fine(tmp_path):
    for host_path, container_path in (("/etc/hostname", "/etc/hostname"), ("/usr/share", "/usr/share"),
                                      (str(tmp_path), "/nonexistent/made/at/run/time")):
        load_config(None, {"process_executable": "/bin/true",
                           "mounts": [{"host_path": host_path, "container_path": container_path}]}, host=True)


def test_a_bare_name_with_a_process_directory_says_where_the_command_on_path_is(tmp_path):
    error = _refused({"process_executable": "sh", "process_directory": str(tmp_path)})
    assert error.exit_code == 127
    assert "a bare name is looked up in the mapped directory when there is one: for the command on PATH give its path, /" in str(error.problems[0])
