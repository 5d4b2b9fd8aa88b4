"""A layer's tar unpacked in overlay's form, as root: whiteouts, opaque directories, hard links,
devices, ownership, modes, times and xattrs; escapes refused."""

import io
import os
import stat
import tarfile

import pytest

from nspawn.images.unpack import LayerError, unpack
from tests.images.conftest import tar_plain
from tests.linux.conftest import needs_root

pytestmark = needs_root

CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep, VFS v2


def entry(name, kind=tarfile.REGTYPE, data=None, **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = attrs.pop("mode", 0o644)
    info.mtime = attrs.pop("mtime", 1_000_000_000)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def layer(*entries) -> io.BytesIO:
    return io.BytesIO(tar_plain(entries))


def test_whiteouts_opaque_links_devices_and_attributes(tmp_path):
    root = tmp_path / "diff"
    root.mkdir()
    ping = entry("usr/bin/ping", data=b"\x7fELF", mode=0o4755, uid=0, gid=0)
    ping[0].pax_headers = {"SCHILY.xattr.security.capability": CAPABILITY.decode("utf-8", "surrogateescape"),
                           "SCHILY.xattr.user.note": "ünïcode",
                           "SCHILY.xattr.trusted.overlay.redirect": "/etc"}
    written = unpack(layer(
        entry("./etc/", tarfile.DIRTYPE, mode=0o750, mtime=1_500_000_000),
        entry("etc/.wh.passwd"),
        entry("var/", tarfile.DIRTYPE, mode=0o755),
        entry("var/.wh..wh..opq"),
        entry("etc/file", data=b"hello", mode=0o600, uid=1234, gid=5678, mtime=1_234_567_890),
        entry("etc/hard", tarfile.LNKTYPE, linkname="etc/file"),
        entry("etc/sym", tarfile.SYMTYPE, linkname="/nowhere/../file"),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/fifo", tarfile.FIFOTYPE),
        ping,
    ), str(root), "L")
    assert written == 9
    whiteout = os.lstat(root / "etc/passwd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(root / "var", "trusted.overlay.opaque") == b"y"
    assert not (root / "var/.wh..wh..opq").exists() and not (root / "etc/.wh.passwd").exists()
    st = os.lstat(root / "etc/file")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime, st.st_nlink) == (1234, 5678, 0o600, 1_234_567_890, 2)
    assert os.lstat(root / "etc/hard").st_ino == st.st_ino
    assert os.readlink(root / "etc/sym") == "/nowhere/../file"
    assert os.lstat(root / "dev/null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(root / "dev/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(root / "usr/bin/ping").st_mode) == 0o4755  # set-user-ID survives chown
    assert os.getxattr(root / "usr/bin/ping", "security.capability") == CAPABILITY
    assert os.getxattr(root / "usr/bin/ping", "user.note").decode() == "ünïcode"
    with pytest.raises(OSError):  # overlay's own attributes never come from a layer
        os.getxattr(root / "usr/bin/ping", "trusted.overlay.redirect")
    etc = os.lstat(root / "etc")
    assert (stat.S_IMODE(etc.st_mode), etc.st_mtime) == (0o750, 1_500_000_000)  # set after its children


@pytest.mark.parametrize("entries, says", [
    ([entry("../evil", data=b"x")], "climbs out of the layer's root"),
    ([entry("a/../../evil", data=b"x")], "climbs out"),
    ([entry("link", tarfile.SYMTYPE, linkname="/"), entry("link/etc/evil", data=b"x")], "passes through the symbolic link link"),
    ([entry("d", tarfile.SYMTYPE, linkname=".."), entry("d/evil", data=b"x")], "passes through"),
    ([entry("hard", tarfile.LNKTYPE, linkname="../../etc/passwd")], "climbs out"),
    ([entry("s", tarfile.SYMTYPE, linkname="/etc"), entry("hard", tarfile.LNKTYPE, linkname="s/passwd")], "passes through"),
    ([entry("hard", tarfile.LNKTYPE, linkname="missing")], "does not hold before it"),
])
def test_escapes_refused_and_nothing_written_outside(tmp_path, entries, says):
    root = tmp_path / "a" / "diff"
    root.mkdir(parents=True)
    with pytest.raises(LayerError, match=says):
        unpack(layer(*entries), str(root), "sha256:x")
    assert sorted(os.listdir(tmp_path)) == ["a"] and sorted(os.listdir(tmp_path / "a")) == ["diff"]
