"""The payload's system calls are filtered by default, as Docker's are: really refused inside a
real container, looser only when asked by name (and warned), and a profile of the user's own
applied as written."""

from __future__ import annotations

import json
import os

from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError
from tests.linux.conftest import needs_root, run, sh

pytestmark = needs_root

PROBE = "grep '^Seccomp:' /proc/self/status | tr -d '\\t'; unshare -U true 2>/dev/null; echo unshare=$?"


def test_the_default_filters_and_refuses_what_docker_refuses(clean):
    r = run(sh(PROBE))
    assert r.code == 0, r.err
    assert "Seccomp:2" in r.out and "unshare=1" in r.out, r.out
    assert not any("seccomp" in w for w in r.warnings())


def test_unconfined_is_asked_by_name_and_warned(clean):
    r = run(sh(PROBE, seccomp="unconfined"))
    assert "Seccomp:0" in r.out and "unshare=0" in r.out, r.out
    assert any("seccomp is unconfined" in w for w in r.warnings())


def test_a_profile_of_ones_own_is_applied(tmp_path, clean):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    r = run(sh("mkdir /tmp/x 2>&1; echo mkdir=$?", seccomp=str(profile)))
    assert "Permission denied" in r.out and "mkdir=1" in r.out, r.out


def test_a_profile_that_does_not_read_is_the_users_mistake(tmp_path, clean):
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": 5}')
    r = run(sh("true", seccomp=str(bad)))
    assert r.code == 2 and "$.defaultAction" in r.result.error and str(bad) in r.result.error


def test_a_missing_profile_is_refused_by_the_host_checks(tmp_path):
    try:
        load_config(None, sh("true", seccomp=str(tmp_path / "nowhere.json")), host=True)
    except ConfigError as e:
        assert e.exit_code == 2 and "$.seccomp" in str(e.problems[0])
    else:
        raise AssertionError("a missing profile was accepted")


def test_the_filter_comes_from_the_cache_after_the_first_run(clean):
    run(sh("true"))
    cache = os.path.join(os.environ["NSPAWN_CACHE_DIR"], "seccomp")
    entries = [name for name in os.listdir(cache) if not name.startswith("libseccomp")]
    assert entries
    stamps = {name: os.stat(os.path.join(cache, name)).st_mtime_ns for name in entries}
    r = run(sh(PROBE))
    assert "Seccomp:2" in r.out
    assert {name: os.stat(os.path.join(cache, name)).st_mtime_ns for name in entries} == stamps
