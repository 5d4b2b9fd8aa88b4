"""`user`: the payload runs as the account the container's own passwd and group files name,
with no capability left when it is not root, and the files it writes are its own."""

from __future__ import annotations

import os
import subprocess

import pytest

from nspawn.backends.linux import users
from tests.conftest import nspawn
from tests.linux.conftest import config, needs_root, run, sh

pytestmark = needs_root

CAPS = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status | tr -d '\\t'"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1234:1234:Builder:/home/builder:/bin/sh\n"
GROUP = "root:x:0:\nbuilder:x:1234:\nstaff:x:50:builder\naudio:x:29:other,builder\nvideo:x:44:other\n"


@pytest.fixture
def accounts(tmp_path):
    """A passwd and group file of the test's own, mapped over the container's."""
    (tmp_path / "passwd").write_text(PASSWD)
    (tmp_path / "group").write_text(GROUP)
    return [{"host_path": str(tmp_path / name), "container_path": f"/etc/{name}", "read_only": True}
            for name in ("passwd", "group")]


def test_uid_65534_runs_id_without_any_capability_and_owns_what_it_writes(tmp_path, clean):
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 65534, 65534)
    r = run(sh(f"id -u; id -g; {CAPS}; echo home=$HOME lang=$LANG; echo hi > made.txt",
               user="65534", process_directory=str(work)))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[:2] == ["65534", "65534"]
    assert sorted(lines[2:7]) == sorted(f"{name}:0000000000000000" for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))
    assert lines[7] == "home=/nonexistent lang=C.UTF-8"  # the host's passwd: nobody's home
    made = os.stat(work / "made.txt")
    assert (made.st_uid, made.st_gid) == (65534, 65534)


def test_a_named_user_gets_its_groups_home_user_and_logname(accounts, clean):
    r = run(sh("id -u; id -G; echo $HOME $USER $LOGNAME; " + CAPS, user="builder", mounts=accounts))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "1234" and sorted(lines[1].split()) == ["1234", "29", "50"]
    assert lines[2] == "/home/builder builder builder"
    assert all(line.endswith(":0000000000000000") for line in lines[3:]) and len(lines) == 8


def test_a_group_given_replaces_the_primary_group_and_the_environment_wins(accounts, clean):
    r = run(sh("id -g; echo $HOME", user="builder:video", mounts=accounts, environment={"HOME": "/srv"}))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["44", "/srv"]


def test_a_uid_the_image_does_not_know_gets_its_own_number_as_group_and_no_name(clean):
    r = run(sh("id -u; id -g; id -G; echo home=$HOME user=${USER-unset}", user="4321"))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["4321", "4321", "4321", "home=/ user=unset"]


def test_root_is_the_default_with_its_home_and_dockers_capabilities_less_mknod(clean):
    r = run(sh("id -u; echo $HOME $USER $LOGNAME; grep CapEff /proc/self/status"))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["0", "/root root root", "CapEff:\t00000000a00425fb"]
    r = run(sh("grep CapEff /proc/self/status", allow_mknod=True))
    assert r.out == "CapEff:\t00000000a80425fb\n", r.out


def test_allow_mknod_for_a_user_other_than_root_is_refused():
    result = nspawn("run", "--user", "65534", "--allow-mknod", "--", "/bin/true")
    assert result.returncode == 2 and "$.allow_mknod: found true with user '65534', who keeps no capability" in result.stderr


def test_an_unknown_name_is_refused_before_anything_is_made(accounts, tmp_path):
    result = nspawn("run", "--user", "nobody-here", "--", "/bin/true")
    assert result.returncode == 2
    assert "$.user: found 'nobody-here': the user 'nobody-here' is not in the container's /etc/passwd" in result.stderr
    result = nspawn("run", "--user", "builder:wheel", "--bind", f"{tmp_path}/passwd:/etc/passwd:ro",
                    "--bind", f"{tmp_path}/group:/etc/group:ro", "--", "/bin/true")
    assert result.returncode == 2 and "the group 'wheel' is not in the container's /etc/group" in result.stderr


def test_a_name_gone_by_run_time_ends_the_run_with_2_and_the_reason(accounts, tmp_path, clean):
    from nspawn.launch import run as launch_run

    checked = config({"process_executable": "/bin/true", "user": "builder", "mounts": accounts})
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    r = launch_run(checked)
    assert r.exit_code == 2 and "the user 'builder' is not in the container's /etc/passwd" in r.error


def test_the_lookup_reads_the_files_it_is_given(tmp_path):
    (tmp_path / "passwd").write_text(PASSWD + "# comment\nbroken line\n")
    (tmp_path / "group").write_text(GROUP)
    look = lambda spec: users.lookup(spec, str(tmp_path / "passwd"), str(tmp_path / "group"))
    assert look("builder") == users.Account(1234, 1234, (1234, 50, 29), "builder", "/home/builder")
    assert look("1234:50") == users.Account(1234, 50, (50, 29), "builder", "/home/builder")
    assert look("0") == users.Account(0, 0, (0,), "root", "/root")
    assert look(None) == look("root")
    with pytest.raises(users.UnknownUser):
        look("ghost")
    with pytest.raises(users.UnknownUser):
        look("builder:ghosts")
    # A root without any passwd file is still root.
    assert users.lookup("root", str(tmp_path / "none"), str(tmp_path / "none")) == users.Account(0, 0, (0,), "root", "/root")
