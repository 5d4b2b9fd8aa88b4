"""The payload's seccomp filter: Docker's default profile compiled with libseccomp against the
kept capabilities, cached as BPF, loaded by prctl in a child that then tries system calls."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nspawn.backends.linux import seccomp_profile
from nspawn.backends.linux.seccomp_profile import ProfileError, parse
from tests.linux.conftest import ROOT, needs_root

pytestmark = needs_root

DOCKER_CAPS = 0xA80425FB  # Docker's default set: no CAP_SYS_ADMIN, CAP_PERFMON, CAP_SYS_PTRACE
CAP_SYS_ADMIN = 1 << 21
EPERM, ENOSYS = 1, 38
CLONE_NEWUSER = 0x10000000
PER_LINUX32, ADDR_NO_RANDOMIZE = 0x0008, 0x0040000

# Run in a fresh interpreter so that nothing of the test process (libseccomp mapped by the
# compile, modules) is inherited: it takes the filter from the cache, loads it, tries the
# calls given as name=number:arg,arg..., reports, then execs /bin/true (exit 0; 3 if exec fails).
CHILD = r"""
import ctypes, os, sys, time
setting, mask, cache = sys.argv[1], int(sys.argv[2], 16), sys.argv[3]
from nspawn.backends.linux import seccomp_filter
before = set(sys.modules)
t0 = time.perf_counter()
got = seccomp_filter.filter_for(setting, mask, cache)
program = seccomp_filter.prepare(got.bpf)
t1 = time.perf_counter()
seccomp_filter.load_filter(program)
t2 = time.perf_counter()
out = [f"hit={got.hit}", f"imported={','.join(sorted(set(sys.modules) - before))}",
       f"mapped={any('libseccomp' in line for line in open('/proc/self/maps'))}",
       f"cache_ms={(t1 - t0) * 1e3:.3f}", f"load_ms={(t2 - t1) * 1e3:.3f}"]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for probe in sys.argv[4:]:
    name, _, call = probe.partition("=")
    number, _, args = call.partition(":")
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(int(number)), *(ctypes.c_long(int(a, 0)) for a in args.split(",") if a))
    out.append(f"{name}={'errno %d' % ctypes.get_errno() if result == -1 else 'ok %d' % result}")
out.append("seccomp=" + [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0])
out.append(f"pid={os.getpid()}")
import subprocess
out.append(f"spawned={subprocess.run(['/bin/true']).returncode}")
os.write(1, ("\n".join(out) + "\n").encode())
try:
    os.execv("/bin/true", ["true"])
finally:
    os._exit(3)
"""


def _child(cache, *probes, setting="default", mask=DOCKER_CAPS):
    done = subprocess.run([sys.executable, "-c", CHILD, setting, f"{mask:x}", str(cache), *probes],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr  # 0: execve of /bin/true worked under the filter
    return dict(line.partition("=")[::2] for line in done.stdout.splitlines() if line)


@pytest.fixture(scope="module")
def lib():
    from nspawn.backends.linux import seccomp
    return seccomp


@pytest.fixture(scope="module")
def nr(lib):
    def number(name):
        n = lib.syscall_number(name)
        assert n is not None and n >= 0, name
        return n
    return number


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from nspawn.backends.linux import seccomp_filter
    directory = tmp_path_factory.mktemp("seccomp-cache")
    made = seccomp_filter.filter_for("default", DOCKER_CAPS, str(directory))
    assert not made.hit and made.entry and os.path.exists(made.entry)
    return directory


def test_default_profile_refuses_what_docker_refuses_and_runs_the_rest(cache, nr):
    seen = _child(cache,
                  f"unshare={nr('unshare')}:{CLONE_NEWUSER}",
                  f"keyctl={nr('keyctl')}:0,0,0,0,0",
                  f"personality32={nr('personality')}:{PER_LINUX32 | ADDR_NO_RANDOMIZE}",
                  f"personality_query={nr('personality')}:0xffffffff",
                  f"io_uring_setup={nr('io_uring_setup')}:1,0",
                  f"perf_event_open={nr('perf_event_open')}:0,0,-1,-1,0",
                  f"userfaultfd={nr('userfaultfd')}:0",
                  f"clone3={nr('clone3')}:0,0",
                  f"getpid={nr('getpid')}:",
                  f"write={nr('write')}:1,0,0")
    assert seen["seccomp"] == "2"
    for call in ("unshare", "keyctl", "personality32", "io_uring_setup", "perf_event_open", "userfaultfd"):
        assert seen[call] == f"errno {EPERM}", (call, seen[call])
    assert seen["clone3"] == f"errno {ENOSYS}"  # the profile's own errnoRet: glibc falls back to clone
    assert seen["personality_query"].startswith("ok")
    assert seen["getpid"] == f"ok {seen['pid']}"
    assert seen["write"] == "ok 0"
    assert seen["spawned"] == "0"  # fork and exec of a child under the filter


def test_numbers_libseccomp_cannot_name_return_enosys(cache, lib):
    from nspawn.backends.linux.seccomp_filter import _known_numbers
    known = _known_numbers(lib, lib.seccomp_arch_native(), 0)
    above = max(known) + 1  # on a newer kernel a real call (statmount on 6.8+), unknown to libseccomp
    # The highest hole: the lowest ones on x86_64 are uretprobe and uprobe (6.11+, 6.17+), which the
    # kernel passes through seccomp without filtering.
    hole = max(n for n in range(max(known)) if n not in known)
    seen = _child(cache, f"above={above}:0,0,0,0", f"hole={hole}:", "far=100000:")
    assert seen["seccomp"] == "2"
    assert seen == {**seen, "above": f"errno {ENOSYS}", "hole": f"errno {ENOSYS}", "far": f"errno {ENOSYS}"}


def test_kept_capabilities_decide_the_rules(tmp_path, nr):
    seen = _child(tmp_path / "cache", f"unshare={nr('unshare')}:{CLONE_NEWUSER}", mask=DOCKER_CAPS | CAP_SYS_ADMIN)
    assert seen["hit"] == "False" and seen["unshare"] == "ok 0"


def test_a_cache_hit_neither_imports_nor_maps_libseccomp(cache, nr):
    seen = _child(cache, f"getpid={nr('getpid')}:")
    assert seen["hit"] == "True"
    assert seen["mapped"] == "False"
    imported = seen["imported"].split(",")
    assert not [m for m in imported if "seccomp" in m or m == "json"], imported
    print(f"cache {seen['cache_ms']} ms + prctl {seen['load_ms']} ms")
    assert float(seen["cache_ms"]) + float(seen["load_ms"]) < 20  # ~1 ms measured; generous for CI


def test_a_damaged_or_foreign_entry_is_rebuilt(tmp_path):
    from nspawn.backends.linux.seccomp_filter import filter_for
    first = filter_for("default", DOCKER_CAPS, str(tmp_path))
    good = open(first.entry, "rb").read()
    for damage in (lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b[:100], lambda b: b""):
        with open(first.entry, "wb") as f:
            f.write(damage(good))
        again = filter_for("default", DOCKER_CAPS, str(tmp_path))
        assert not again.hit and again.bpf == first.bpf and open(first.entry, "rb").read() == good
    os.chmod(first.entry, 0o666)  # another user could have written it: not trusted
    assert not filter_for("default", DOCKER_CAPS, str(tmp_path)).hit
    assert filter_for("default", DOCKER_CAPS, str(tmp_path)).hit
    other = filter_for("default", DOCKER_CAPS | CAP_SYS_ADMIN, str(tmp_path))
    assert not other.hit and other.entry != first.entry and other.bpf != first.bpf


def test_a_user_profile_by_path(tmp_path, nr):
    profile = tmp_path / "mine.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ['
                       '{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}')
    seen = _child(tmp_path / "cache", f"getppid={nr('getppid')}:", f"getpid={nr('getpid')}:", setting=str(profile))
    assert seen["seccomp"] == "2" and seen["getppid"] == "errno 42" and seen["getpid"] == f"ok {seen['pid']}"


@pytest.mark.parametrize("text, where, message", [
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [', ":1:", "not JSON"),
    ('{"defaultAction": "SCMP_ACT_DENY"}', "$.defaultAction:", "unknown action \"SCMP_ACT_DENY\""),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "$.syscalls[0].args[0].index:", "from 0 to 5"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscall": []}', "$:", "unknown key 'syscall'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}]}',
     "$.syscalls[0]:", "no_such_call is unknown to libseccomp"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultAction": "SCMP_ACT_ALLOW"}', "", "duplicate key"),
])
def test_a_malformed_profile_names_the_file_and_the_problem(tmp_path, text, where, message):
    from nspawn.backends.linux.seccomp_filter import filter_for
    profile = tmp_path / "bad.json"
    profile.write_text(text)
    with pytest.raises(ProfileError) as caught:
        filter_for(str(profile), DOCKER_CAPS, str(tmp_path / "cache"))
    said = str(caught.value)
    assert said.startswith(str(profile)) and where in said and message in said, said
    assert caught.value.exit_code == 2


def test_a_missing_profile_and_unconfined(tmp_path):
    from nspawn.backends.linux.seccomp_filter import filter_for
    assert filter_for("unconfined", DOCKER_CAPS, str(tmp_path)) is None
    with pytest.raises(ProfileError, match="nope.json: cannot read the seccomp profile"):
        filter_for(str(tmp_path / "nope.json"), DOCKER_CAPS, str(tmp_path))


# The profile's reading, pure: what applies for which capabilities, architecture and kernel.

def _default(arch="amd64", kept=DOCKER_CAPS, kernel=(6, 1, 0)):
    from nspawn.backends.linux.seccomp_filter import DEFAULT_PROFILE
    with open(DEFAULT_PROFILE, "rb") as f:
        return parse(f.read(), DEFAULT_PROFILE, arch, kept, kernel)


def _rules_for(profile, name):
    return [r for r in profile.rules if name in r.names]


def test_includes_and_excludes_follow_caps_arches_and_kernel():
    plain, admin = _default(), _default(kept=DOCKER_CAPS | CAP_SYS_ADMIN)
    assert plain.default_action == "SCMP_ACT_ERRNO" and plain.default_number == EPERM
    assert plain.arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert [r.conditions for r in _rules_for(plain, "clone")] == [((0, "SCMP_CMP_MASKED_EQ", 2114060288, 0),)]
    assert [(r.action, r.number) for r in _rules_for(plain, "clone3")] == [("SCMP_ACT_ERRNO", ENOSYS)]
    assert not _rules_for(plain, "unshare") and _rules_for(admin, "unshare")
    assert [r.conditions for r in _rules_for(admin, "clone")] == [()]
    assert _rules_for(plain, "arch_prctl") and not _rules_for(_default("arm64"), "arch_prctl")
    assert [r.conditions for r in _rules_for(_default("s390x"), "clone")] == [((1, "SCMP_CMP_MASKED_EQ", 2114060288, 0),)]
    assert _rules_for(plain, "ptrace") and not _rules_for(_default(kernel=(4, 4, 0)), "ptrace")
    assert _default("arm64").arches == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")


def test_capabilities_by_mask_or_name_and_versions():
    assert seccomp_profile.capability_names(CAP_SYS_ADMIN | 1) == ("CAP_CHOWN", "CAP_SYS_ADMIN")
    assert seccomp_profile.capability_names(["sys_admin", "CAP_CHOWN"]) == ("CAP_CHOWN", "CAP_SYS_ADMIN")
    assert seccomp_profile.kernel_version("6.18.44-fc-v1045") == (6, 18, 44)
    assert seccomp_profile.kernel_version("4.8") == (4, 8)
    assert seccomp_profile.docker_arch("x86_64") == "amd64" and seccomp_profile.docker_arch("armv7l") == "arm"


def test_one_argument_tested_twice_becomes_one_rule_per_condition():
    text = (b'{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",'
            b' "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},'
            b' {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",'
            b' "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 1, "op": "SCMP_CMP_EQ"}]}]}')
    rules = parse(text, "p.json", "amd64", 0, (6, 1)).rules
    assert [len(r.conditions) for r in rules] == [1, 1, 2]


def test_every_action_and_comparison_has_a_value(lib):
    from nspawn.backends.linux.seccomp_filter import _action
    for name, takes_number in seccomp_profile.ACTIONS.items():
        assert isinstance(_action(lib, name, 1 if takes_number else None), int)
    assert set(seccomp_profile.COMPARISONS) == set(lib.COMPARE)
