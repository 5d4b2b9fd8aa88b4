"""The devices a container may use: the standard set its /dev holds, and nothing else, enforced
by the kernel's device cgroup (v1: the devices controller's allow list; v2: a
BPF_PROG_TYPE_CGROUP_DEVICE program on the container's group). With CAP_MKNOD dropped and every
mount but /dev `nodev`, this is the second of two locks: a node the payload finds or makes
elsewhere opens nothing either way.

The rules and the program are pure (unit-tested); `confine` applies them to a run's group.
"""

from __future__ import annotations

import os
import struct

from nspawn.records import record

V1_HIERARCHY = "devices"


@record
class Rule:
    kind: str  # "c" character, "b" block
    major: int | None  # None: any
    minor: int | None
    access: str  # of "rwm": read, write, mknod


# Docker's default list, less its "mknod anything" lines: /dev's nodes (mounts.STANDARD_DEVICES),
# /dev/ptmx and the pseudo-terminals of the container's own devpts.
STANDARD = (
    Rule("c", 1, 3, "rwm"), Rule("c", 1, 5, "rwm"), Rule("c", 1, 7, "rwm"), Rule("c", 1, 8, "rwm"),
    Rule("c", 1, 9, "rwm"), Rule("c", 5, 0, "rwm"), Rule("c", 5, 2, "rwm"), Rule("c", 136, None, "rwm"),
)
# With CAP_MKNOD kept (allow_mknod), making any node is allowed, as Docker allows it; using one
# outside the standard set still is not.
MKNOD_ANY = (Rule("c", None, None, "m"), Rule("b", None, None, "m"))


def rules(allow_mknod: bool) -> tuple[Rule, ...]:
    return STANDARD + (MKNOD_ANY if allow_mknod else ())


def v1_files(allowed: tuple[Rule, ...]) -> list[tuple[str, str]]:
    """(file, value) for a v1 devices group, in order: deny everything, then allow each rule."""
    def number(n: int | None) -> str:
        return "*" if n is None else str(n)

    return [("devices.deny", "a")] + [("devices.allow", f"{r.kind} {number(r.major)}:{number(r.minor)} {r.access}")
                                      for r in allowed]


# BPF, as linux/bpf.h and linux/filter.h encode it
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
_RSH_K = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K
_MOV_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
_MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_EXIT = 0x95
_DEVCG_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_DEVCG_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn: the register nibbles are dst low, src high (a little-endian bit field;
    # big-endian machines lay them out the other way round)
    regs = (src << 4 | dst) if struct.pack("=H", 1)[0] == 1 else (dst << 4 | src)
    return struct.pack("=BBhi", code, regs, off, imm)


def program(allowed: tuple[Rule, ...]) -> bytes:
    """A device program: 1 (allow) when the access matches a rule, else 0. Its context is
    struct bpf_cgroup_dev_ctx {u32 access_type (access << 16 | type); u32 major; u32 minor}."""
    head = [
        _insn(_LDX_W, 2, 1, 0), _insn(_AND_K, 2, imm=0xFFFF),  # r2: type
        _insn(_LDX_W, 3, 1, 0), _insn(_RSH_K, 3, imm=16),  # r3: access
        _insn(_LDX_W, 4, 1, 4), _insn(_LDX_W, 5, 1, 8),  # r4, r5: major, minor
    ]
    body = []
    for rule in allowed:
        # (code, dst, src, imm, whether it jumps past the rest of the rule when its test fails)
        steps = [(_JNE_K, 2, 0, _DEVCG_TYPE[rule.kind], True),
                 (_MOV_X, 1, 3, 0, False), (_AND_K, 1, 0, 7 & ~sum(_DEVCG_ACCESS[a] for a in rule.access), False),
                 (_JNE_K, 1, 0, 0, True)]  # r1: the access asked beyond the rule's
        if rule.major is not None:
            steps.append((_JNE_K, 4, 0, rule.major, True))
        if rule.minor is not None:
            steps.append((_JNE_K, 5, 0, rule.minor, True))
        steps += [(_MOV_K, 0, 0, 1, False), (_EXIT, 0, 0, 0, False)]
        body += [_insn(code, dst, src, len(steps) - i - 1 if jumps else 0, imm)
                 for i, (code, dst, src, imm, jumps) in enumerate(steps)]
    return b"".join(head + body + [_insn(_MOV_K, 0, imm=0), _insn(_EXIT)])


UNCONFINED = ("the devices cgroup controller is not mounted: the kernel does not confine the container's device "
              "use (CAP_MKNOD is dropped and every mount but /dev is nodev, so only /dev's standard nodes open)")


def group_key(layout) -> str | None:
    """The key of the run's group that confines its devices (cgroups.directories' keys), or None
    when this host has none to offer: v1 without the devices hierarchy."""
    from nspawn.backends.linux import cgroups

    if layout.version == 2:
        return cgroups.UNIFIED
    return V1_HIERARCHY if V1_HIERARCHY in layout.v1 else None


def doctor_line(layout) -> tuple[bool, str]:
    """`nspawn doctor`'s word on device confinement here; on v2 the program is loaded to see."""
    key = group_key(layout)
    if key is None:
        return False, UNCONFINED
    if layout.version == 1:
        return True, "the v1 devices controller allows only /dev's standard devices"
    from nspawn.backends.linux import libc

    try:
        os.close(libc.load_device_program(program(STANDARD), b"nspawn_doctor"))
    except OSError as e:
        return False, f"no device BPF program loads ({e}): runs will fail"
    return True, "a device BPF program on each run's group allows only /dev's standard devices"


def confine(version: int, group: str, allowed: tuple[Rule, ...]) -> None:
    """Let the processes of `group` use only the `allowed` devices. v1: `group` is in the devices
    hierarchy; v2: the run's group, which holds the program until it is removed (so the group's
    journal entry releases it too)."""
    from nspawn.backends.linux import cgroups, libc

    if version == 1:
        for file, value in v1_files(allowed):
            try:
                cgroups.write(os.path.join(group, file), value)
            except PermissionError:
                # A group may allow no more than its parent: where the launcher's own group
                # (a container's, say) denies a device, it stays denied here too.
                if file != "devices.allow":
                    raise
        return
    prog = libc.load_device_program(program(allowed), b"nspawn_devices")
    try:
        fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.attach_device_program(prog, fd)
        finally:
            os.close(fd)
    finally:
        os.close(prog)
