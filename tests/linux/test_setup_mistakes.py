"""A user's mistake that the host checks refuse before setup (nspawn/config/host.py) but that
reaches the backend when a path changed after them: one clear line naming the call or the
path and the reason, never an internal error; a bind of a file on a directory (or the reverse)
ends as the host checks end it, exit 2. Configs are loaded without the host checks here, as
if the paths had changed after them."""

from __future__ import annotations

import os

from nspawn.config.resolve import load_config
from nspawn.launch import run
from tests.linux.conftest import STARTED, needs_root

pytestmark = needs_root


def unchecked(**fields):
    STARTED.append(container_id := f"nspawn-test-{os.urandom(4).hex()}")
    return run(load_config(None, {"process_executable": "/bin/true", **fields}, host=False), container_id=container_id)


def test_a_file_bound_on_a_directory_says_so(clean):
    r = unchecked(mounts=[{"host_path": "/etc/hostname", "container_path": "/usr/share"}])
    assert (r.exit_code, r.error) == (
        2, "bind-mounts: /etc/hostname is a file and /usr/share is a directory in the container; it cannot be mounted there")


def test_a_directory_bound_on_a_file_says_so(clean):
    r = unchecked(mounts=[{"host_path": "/usr/share", "container_path": "/etc/hostname"}])
    assert (r.exit_code, r.error) == (
        2, "bind-mounts: /usr/share is a directory and /etc/hostname is a file in the container; it cannot be mounted there")


def test_a_missing_working_directory_is_named(clean):
    r = unchecked(working_directory="/nonexistent")
    assert (r.exit_code, r.error) == (125, "exec-prepare: working directory /nonexistent: No such file or directory")


def test_a_run_as_a_user_names_the_path_it_was_refused():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = run(load_config(None, {"process_executable": "/bin/true"}, host=False))
            os.write(w, f"{result.exit_code} {result.error}".encode())
        finally:
            os._exit(0)
    os.close(w)
    said = os.read(r, 4096).decode()
    os.waitpid(pid, 0)
    code, _, error = said.partition(" ")
    # The first thing a user may not make (the journal's directory, here) is named with why.
    path, _, why = error.partition(": ")
    assert (code, why) == ("125", "Permission denied") and os.environ["NSPAWN_STATE_DIR"].startswith(path), said
