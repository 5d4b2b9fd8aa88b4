"""The default root without a parent layer: the host's OS, none of its people's or services'
files, no secrets, no scratch of any container; all of it with host_view full (warned)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from nspawn.backends.linux import hostview
from nspawn.errors import ConfigError
from tests.linux.conftest import needs_root, run, sh

pytestmark = needs_root

LOOK = r"""
for d in /root /home /run /var /srv /mnt /media; do [ -d $d ] && echo "$d: $(ls -A $d | tr '\n' ' ')"; done
for f in /etc/shadow /etc/gshadow /etc/passwd /usr/bin/env; do [ -e $f ] && echo "$f present"; done
ls /etc/ssh/ssh_host_* 2>/dev/null | sed 's/^/key /'
echo "rootmode $(stat -c %a /)"
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo "as nobody: $(id -u)"'
touch /var/tmp/x /home/x && echo "writable"
cat /proc/self/mountinfo
"""


def _tmpfs_takes_user_attributes() -> bool:
    """Whether this kernel's tmpfs keeps user.* attributes (Linux 6.6), where the view's layer
    marks its empty directories in a user namespace; /dev/shm is a tmpfs."""
    fd, path = tempfile.mkstemp(dir="/dev/shm")
    os.close(fd)
    try:
        os.setxattr(path, "user.nspawn-test", b"y")
        return True
    except OSError:
        return False
    finally:
        os.unlink(path)


@pytest.mark.parametrize("private_users", ["no", "pick"])
def test_the_default_view_is_the_os_without_people_services_or_secrets(private_users, tmp_path, _scratch, clean):
    """With private users too: the view's layer is made in the user namespace (its marks in
    user.* attributes), its directories owned as the id-mapped host's / shows them; where its
    tmpfs keeps no user.* attribute, the directories it would show empty are absent instead."""
    r = run(sh(LOOK, private_users=private_users))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert "/etc/passwd present" in lines and "/usr/bin/env present" in lines
    assert "/etc/shadow present" not in lines and "/etc/gshadow present" not in lines
    assert not any(line.startswith("key ") for line in lines)
    empty = private_users == "no" or _tmpfs_takes_user_attributes()
    for d in ("/root", "/home", "/run", "/srv", "/mnt", "/media"):
        if os.path.isdir(d):
            assert (f"{d}: " in lines) == empty and not any(line.startswith(f"{d}: ") and line != f"{d}: " for line in lines), (d, lines)
    # only its empty /var/tmp, made for programs that expect one
    assert ("/var: tmp " in lines) == empty and ("writable" in lines) == empty, lines
    assert "rootmode 755" in lines and "as nobody: 65534" in lines
    # none of the host's scratch paths in the mount table
    assert str(_scratch) not in r.out and "upperdir=upper" in r.out
    assert not os.path.exists("/home/x")  # the write stayed in the scratch


def test_mapped_directories_show_through_the_empty_ones(tmp_path, clean):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine").write_text("here\n")
    r = run(sh("cat /home/someone/work/mine; ls -A /home", process_directory=str(work),
               mapped_directory="/home/someone/work"))
    assert r.code == 0, r.err
    assert r.out == "here\nsomeone\n"


def test_a_scratch_outside_the_empty_directories_is_hidden_too(monkeypatch, clean):
    """The scratch of every container, this one's and others', when it lies where the view would
    show it: a whiteout in the upper layer."""
    parent = f"/opt/nspawn-test-scratch-{os.getpid()}"
    monkeypatch.setenv("NSPAWN_SCRATCH_DIR", parent)
    try:
        r = run(sh(f"ls -d {parent} 2>&1 || echo hidden; ls /opt"))
        assert r.code == 0, r.err
        assert "hidden" in r.out and os.path.basename(parent) not in r.out.splitlines()[-1:]
        assert os.listdir(parent) == []  # released
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_the_host_checks_see_what_the_container_sees(clean):
    """What validate accepts, run runs: an executable under a hidden directory is refused
    (127) before anything is set up, unless the full view shows it."""
    os.makedirs("/srv", exist_ok=True)
    tool = f"/srv/nspawn-test-tool-{os.getpid()}"
    shutil.copy("/bin/true", tool)
    try:
        with pytest.raises(ConfigError, match="was not found in the container") as e:
            run({"process_executable": tool})
        assert e.value.exit_code == 127
        assert run({"process_executable": tool, "host_view": "full"}).code == 0
    finally:
        os.unlink(tool)


def test_the_empty_directories_themselves_are_there(clean):
    r = run(sh("pwd; ls -A", working_directory="/root"))
    assert r.code == 0 and r.out == "/root\n", (r.out, r.err)
    r = run(sh("pwd", working_directory="/var/tmp"))
    assert r.out == "/var/tmp\n"


def test_the_full_view_is_asked_for_and_warned(clean):
    r = run(sh("test -e /etc/shadow && echo shadow; test -d /var/lib && echo var", host_view="full"))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["shadow", "var"]
    assert hostview.FULL_WARNING in r.warnings()
