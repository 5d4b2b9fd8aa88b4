"""In-memory file systems in the container: where asked, of the size asked, without setuid or
devices, and never where a mount would hide them or over the container's own /proc."""

from __future__ import annotations

import pytest

from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError
from tests.linux.conftest import needs_root, run, sh


def _as_root(test):
    for mark in needs_root:
        test = mark(test)
    return test


@_as_root
def test_a_tmpfs_is_mounted_with_its_size_and_flags(clean):
    r = run(sh("grep ' /scratch' /proc/mounts; dd if=/dev/zero of=/scratch/big bs=1M count=20 2>/dev/null; "
               "echo size=$(stat -c %s /scratch/big); touch /scratch/inner/x && echo inner=ok",
               tmpfs=[{"container_path": "/scratch", "size_mb": 8}, {"container_path": "/scratch/inner"}]))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert "tmpfs /scratch tmpfs rw,nosuid,nodev" in lines[0] and "size=8192k" in lines[0], r.out
    assert "size=8388608" in r.out and "inner=ok" in r.out


@pytest.mark.parametrize("tmpfs, mapped, expected", [
    ("/proc/x", None, "would cover the container's /proc"),
    ("/work/cache", "/work", "below '/work', whose mount would hide it"),
])
def test_a_tmpfs_a_mount_would_hide_is_refused(tmp_path, tmpfs, mapped, expected):
    overrides = sh("true", tmpfs=[{"container_path": tmpfs}])
    if mapped:
        overrides.update(process_directory=str(tmp_path), mapped_directory=mapped)
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert info.value.exit_code == 2 and expected in str(info.value.problems[0])
