"""Host paths resolved once, without following a link a payload planted, and used by descriptor:
bind sources and the output file, alone and raced by a concurrent container."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError
from nspawn.launch import run as launch_run
from nspawn.session import new_container_id
from tests.linux.conftest import ROOT, STARTED, Run, config, needs_root, run, sh

pytestmark = needs_root

ROUNDS = 30


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


def swapper(work, script: str) -> subprocess.Popen:
    """A concurrent container with `work` mapped at /work, running `script` in a loop; it says
    "go" once it has started."""
    loop = f"echo go; while :; do {script}; done"
    proc = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "-D", str(work), "--mapped-directory", "/work",
                             "--timeout", "120", "--grace", "1", "--", "/bin/sh", "-c", loop],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout.readline() == b"go\n"
    return proc


def run_checked(checked) -> Run:
    """A run of a config already checked against the host: the races are at run time."""
    out, err, events = io.BytesIO(), io.BytesIO(), []
    STARTED.append(new_container_id())
    result = launch_run(checked, listener=lambda e, d: events.append((e, d)), container_id=STARTED[-1],
                        stdout=out, stderr=err)
    return Run(result, out.getvalue(), err.getvalue(), events)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_a_mount_source_a_previous_run_made_a_link_is_refused(work, clean):
    r = run(sh("ln -s / /work/data", process_directory=str(work), mapped_directory="/work"))
    assert r.code == 0, r.err
    r = run(sh("ls /data/etc/passwd && echo leaked", mounts=[{"host_path": str(work / "data"), "container_path": "/data"}]))
    assert r.code == 2 and "leaked" not in r.out
    assert "symbolic link" in r.result.error and str(work / "data") in r.result.error


def test_a_mount_source_raced_by_a_concurrent_container_never_binds_what_it_links_to(work, clean):
    """The review's race: while one container swaps a directory of its mapping for a link to the
    host's /, another run maps that path. Each run gets the directory, or is refused (2); none
    sees the host's root."""
    (work / "data").mkdir()
    checked = config(sh("if [ -e /data/etc/passwd ]; then echo host-root; else echo own; fi",
                        mounts=[{"host_path": str(work / "data"), "container_path": "/data", "read_only": False}]))
    proc = swapper(work, "mv -T /work/data /work/real; ln -s / /work/data; rm /work/data; mv -T /work/real /work/data")
    outcomes = []
    try:
        for _ in range(ROUNDS):
            r = run_checked(checked)
            # 125: caught between the swapper's two moves, when there is nothing at the path
            assert r.code in (0, 2) or "No such file or directory" in r.result.error, r.result.error
            outcomes.append(r.code if r.code else r.out.strip())
    finally:
        stop(proc)
    assert "host-root" not in outcomes
    assert set(outcomes) <= {"own", 2, 125}, outcomes
    assert "own" in outcomes  # the race was really run: some runs got the directory


def output(work, name: str):
    """A run writing its output to `name`, planted after the host checks (which refuse the same
    when they see it: test_the_host_checks_refuse_them_too)."""
    return run_checked(load_config(None, sh("echo out", process_directory=str(work), stdout_filename=name), host=False))


def test_the_output_file_must_be_a_regular_file_or_none(work, tmp_path, clean):
    os.mkfifo(work / "fifo")
    os.mknod(work / "null", 0o20666, os.makedev(1, 3))
    (work / "link").symlink_to(tmp_path / "victim")
    (work / "real").mkdir()
    (work / "sub").symlink_to("real")
    for name, said in (("fifo", "is a FIFO"), ("null", "is a character device"), ("link", "symbolic link"),
                       ("sub/out.txt", "symbolic link")):
        r = output(work, name)
        assert r.code == 2 and said in r.result.error, (name, r.result.error)
    assert not (tmp_path / "victim").exists() and os.listdir(work / "real") == []
    (work / "old.txt").write_text("x" * 100)
    r = output(work, "old.txt")
    assert r.code == 0 and (work / "old.txt").read_text() == "out\n"  # truncated, then written
    r = output(work, "new.txt")
    assert r.code == 0 and (work / "new.txt").read_text() == "out\n"
    assert os.stat(work / "new.txt").st_mode & 0o777 == 0o644


def test_the_host_checks_refuse_them_too(work):
    os.mkfifo(work / "fifo")
    with pytest.raises(ConfigError, match="is not a regular file"):
        config(sh("echo out", process_directory=str(work), stdout_filename="fifo"))


def test_the_output_file_raced_by_a_concurrent_container_is_never_a_link(work, tmp_path, clean):
    """A container swaps the output file for a link to a host file between the launcher's
    check and its open: no run writes through it or creates its target."""
    victim = tmp_path / "victim"
    (work / "out.txt").write_text("")
    checked = config(sh("echo out", process_directory=str(work), stdout_filename="out.txt"))
    proc = swapper(work, f"ln -s {victim} /work/tmp-link; mv -T /work/tmp-link /work/out.txt; rm -f /work/out.txt")
    codes = []
    try:
        for _ in range(ROUNDS):
            codes.append(run_checked(checked).code)
            time.sleep(0.001)
    finally:
        stop(proc)
    assert not victim.exists(), victim.read_text()
    assert set(codes) <= {0, 2}, codes


def test_a_parent_layer_a_previous_run_made_a_link_is_refused(work, tmp_path, clean):
    """A root file system kept in a writable mapping, turned into a link to the host's / by a
    payload: the next run would have had the host's whole root, none of it hidden."""
    rootfs = work / "rootfs"
    shutil.copytree("/usr/bin", rootfs / "bin", symlinks=True, ignore=lambda d, names: [n for n in names if n != "true"])
    checked = load_config(None, {"process_executable": "/bin/true", "parent_layer_directory": str(rootfs)}, host=False)
    first = run_checked(checked)
    assert first.code in (0, 127), first.result.error  # it mounts (true may lack its libraries there)
    shutil.rmtree(rootfs)
    rootfs.symlink_to("/")
    r = run_checked(checked)
    assert r.code == 2 and "symbolic link" in r.result.error
